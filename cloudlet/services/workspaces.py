"""Workspaces, their members and their custom roles.

Everything a workspace holds is addressed through the caller's membership: a workspace the caller
is not a member of answers 404, exactly like one that does not exist.

Grants (adding a member, changing a role, making owners, custom roles, API tokens) are checked
against what the caller's *credential* holds: an API token's own role and its capped permissions,
never merely its user's membership. Nobody hands out more than they hold, and only an owner (an
owner-role token, a signed-in owner, a system admin signed in or with an owner-role token) makes
or unmakes owners. Removing a member or changing their role revokes their API tokens and unused
console tickets for the workspace: re-adding them later gives nothing back.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloudlet.db.models import ApiToken, Instance, Membership, Network, Role, User, Volume, Workspace, utcnow
from cloudlet.errors import Conflict, Forbidden, InUse, NotFound
from cloudlet.services.auth import OWNER, find_role, membership_role, revoke_credentials
from cloudlet.services.context import RequestContext
from cloudlet.services.names import check_name, insert_unique, lookup
from cloudlet.services.permissions import ALL_PERMISSIONS, BUILTIN_ROLES, check_permissions
from cloudlet.services.users import get_user


def visible_workspaces(session: Session, ctx: RequestContext) -> list[tuple[Workspace, str]]:
    """The caller's workspaces with the caller's role in each (all of them for system admins);
    for an API token, its own workspace and the token's role."""
    if ctx.token_id is not None and not ctx.is_admin:
        own = session.get(Workspace, ctx.workspace_id)
        return [(own, ctx.role)] if own is not None else []
    if ctx.is_admin:
        rows = session.execute(
            select(Workspace, Role.name)
            .outerjoin(
                Membership, (Membership.workspace_id == Workspace.id) & (Membership.user_id == ctx.user_id)
            )
            .outerjoin(Role, Role.id == Membership.role_id)
            .order_by(Workspace.name)
        ).all()
        return [(ws, role or "owner") for ws, role in rows]
    rows = session.execute(
        select(Workspace, Role.name)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .join(Role, Role.id == Membership.role_id)
        .where(Membership.user_id == ctx.user_id)
        .order_by(Workspace.name)
    ).all()
    return [(ws, role) for ws, role in rows]


def get_workspace(session: Session, ctx: RequestContext, ref: str) -> tuple[Workspace, str]:
    """A workspace the caller belongs to, with the caller's role there; else 404."""
    for ws, role in visible_workspaces(session, ctx):
        if ref in (ws.id, ws.name):
            return ws, role
    raise NotFound(f"workspace {ref!r} not found", code="workspace_not_found")


def role_permissions(session: Session, ctx: RequestContext, workspace_id: str) -> frozenset[str]:
    """The caller's permissions in a workspace (a token is held to its own role as well)."""
    if ctx.workspace_id == workspace_id:
        return ctx.permissions
    if ctx.token_id is not None:  # a token is bound to its workspace
        return frozenset()
    if ctx.is_admin:
        return ALL_PERMISSIONS
    role = membership_role(session, ctx.user_id, workspace_id)
    return frozenset(role.permissions) if role is not None else frozenset()


def caller_role(session: Session, ctx: RequestContext, workspace_id: str) -> str | None:
    """The role the caller's credential holds in a workspace: an API token's own role (a token
    is bound to its workspace), a signed-in user's membership role ("owner" for a system admin
    who is not a member); None when it holds none."""
    if ctx.workspace_id == workspace_id:
        return ctx.role
    if ctx.token_id is not None:
        return None
    role = membership_role(session, ctx.user_id, workspace_id)
    if role is not None:
        return role.name
    return OWNER if ctx.is_admin else None


def _owner_power(session: Session, ctx: RequestContext, workspace_id: str) -> bool:
    # ctx.is_admin: a signed-in system admin, or one's owner-role token (a smaller role caps it)
    return ctx.is_admin or caller_role(session, ctx, workspace_id) == OWNER


def check_grant(session: Session, ctx: RequestContext, workspace_id: str, role: Role) -> None:
    """403 unless the caller's credential may hand out ``role`` in the workspace (or change or
    take away a member's ``role``): it holds every permission of it, and only owners deal in the
    owner role."""
    if role.name == OWNER and role.workspace_id is None and not _owner_power(session, ctx, workspace_id):
        raise Forbidden("only an owner can make, change or remove owners", code="permission_denied")
    held = role_permissions(session, ctx, workspace_id)
    if not set(role.permissions) <= held:
        raise Forbidden(
            f"role {role.name!r} holds more than you do here "
            f"({', '.join(sorted(set(role.permissions) - held))})",
            code="permission_denied",
        )


def require_in(session: Session, ctx: RequestContext, workspace_id: str, permission: str) -> None:
    if permission not in role_permissions(session, ctx, workspace_id):
        raise Forbidden(f"your role in this workspace does not allow {permission}", code="permission_denied")


def create_workspace(session: Session, ctx: RequestContext, name: str) -> Workspace:
    """A new workspace, owned by its creator."""
    if ctx.user_id is None:
        raise Forbidden("only users create workspaces", code="permission_denied")
    if ctx.token_id is not None and not ctx.is_admin:
        raise Forbidden(
            "API tokens are bound to their workspace; sign in to create one", code="permission_denied"
        )
    ws = Workspace(name=check_name(name, what="workspace name"))
    insert_unique(session, ws, f"a workspace named {name!r} exists", "name_taken")
    owner = find_role(session, ws.id, "owner")  # built in: made at start-up
    session.add(Membership(workspace_id=ws.id, user_id=ctx.user_id, role_id=owner.id))
    session.flush()
    return ws


def delete_workspace(session: Session, ctx: RequestContext, ref: str) -> None:
    ws, _ = get_workspace(session, ctx, ref)
    if not _owner_power(session, ctx, ws.id):
        raise Forbidden("only an owner can delete a workspace", code="permission_denied")
    for model, what in ((Instance, "instances"), (Network, "networks"), (Volume, "volumes")):
        count = session.scalar(select(func.count()).where(model.workspace_id == ws.id)) or 0
        if count:
            raise InUse(f"workspace {ws.name!r} still has {count} {what}", code="workspace_not_empty")
    for token in session.scalars(select(ApiToken).where(ApiToken.workspace_id == ws.id)):
        token.revoked_at = token.revoked_at or utcnow()
    for m in session.scalars(select(Membership).where(Membership.workspace_id == ws.id)):
        session.delete(m)
    for r in session.scalars(select(Role).where(Role.workspace_id == ws.id)):
        session.delete(r)
    session.flush()
    session.delete(ws)


# -- members -------------------------------------------------------------------------------------
def members(session: Session, workspace_id: str) -> list[tuple[User, Role, Membership]]:
    rows = session.execute(
        select(User, Role, Membership)
        .join(Membership, Membership.user_id == User.id)
        .join(Role, Role.id == Membership.role_id)
        .where(Membership.workspace_id == workspace_id)
        .order_by(User.username)
    ).all()
    return [(u, r, m) for u, r, m in rows]


def add_member(
    session: Session, ctx: RequestContext, workspace_id: str, username: str, role_ref: str
) -> Membership:
    require_in(session, ctx, workspace_id, "member:create")
    user = get_user(session, username)
    role = find_role(session, workspace_id, role_ref)
    check_grant(session, ctx, workspace_id, role)
    membership = Membership(workspace_id=workspace_id, user_id=user.id, role_id=role.id)
    insert_unique(session, membership, f"{user.username!r} is already a member", "already_member")
    if not user.is_admin:  # tokens from an earlier membership stay dead (a system admin's never died)
        revoke_credentials(session, user.id, workspace_id)
    return membership


def _membership(session: Session, workspace_id: str, username: str) -> tuple[Membership, Role]:
    user = get_user(session, username)
    row = session.execute(
        select(Membership, Role)
        .join(Role, Role.id == Membership.role_id)
        .where(Membership.workspace_id == workspace_id, Membership.user_id == user.id)
    ).first()
    if row is None:
        raise NotFound(f"{username!r} is not a member", code="member_not_found")
    return row[0], row[1]


def _owners(session: Session, workspace_id: str) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Membership)
            .join(Role, Role.id == Membership.role_id)
            .where(Membership.workspace_id == workspace_id, Role.name == OWNER, Role.workspace_id.is_(None))
        )
        or 0
    )


def set_member_role(
    session: Session, ctx: RequestContext, workspace_id: str, username: str, role_ref: str
) -> Membership:
    """A new role for a member; their API tokens and console tickets for the workspace are
    revoked (they were issued under the old role)."""
    require_in(session, ctx, workspace_id, "member:edit")
    membership, current = _membership(session, workspace_id, username)
    role = find_role(session, workspace_id, role_ref)
    check_grant(session, ctx, workspace_id, current)  # nobody changes a role they could not give
    check_grant(session, ctx, workspace_id, role)
    if current.name == OWNER and role.name != OWNER and _owners(session, workspace_id) <= 1:
        raise Conflict("a workspace keeps at least one owner", code="last_owner")
    if role.id != current.id:
        membership.role_id = role.id
        revoke_credentials(session, membership.user_id, workspace_id)
    return membership


def remove_member(session: Session, ctx: RequestContext, workspace_id: str, username: str) -> None:
    """Remove a member; their API tokens and console tickets for the workspace are revoked."""
    require_in(session, ctx, workspace_id, "member:delete")
    membership, current = _membership(session, workspace_id, username)
    check_grant(session, ctx, workspace_id, current)  # nor takes away one
    if current.name == OWNER and _owners(session, workspace_id) <= 1:
        raise Conflict("a workspace keeps at least one owner", code="last_owner")
    revoke_credentials(session, membership.user_id, workspace_id)
    session.delete(membership)


# -- custom roles --------------------------------------------------------------------------------
def roles(session: Session, workspace_id: str) -> list[Role]:
    return list(
        session.scalars(
            select(Role)
            .where((Role.workspace_id == workspace_id) | Role.workspace_id.is_(None))
            .order_by(Role.workspace_id.is_not(None), Role.name)
        )
    )


def create_role(
    session: Session, ctx: RequestContext, workspace_id: str, name: str, permissions: list[str]
) -> Role:
    require_in(session, ctx, workspace_id, "member:edit")
    check_name(name, what="role name")
    if name in BUILTIN_ROLES:
        raise Conflict(f"{name!r} is a built-in role", code="name_taken")
    perms = check_permissions(permissions)
    held = role_permissions(session, ctx, workspace_id)
    if not perms <= held:  # nobody hands out more than they hold
        raise Forbidden(f"you cannot grant {', '.join(sorted(perms - held))}", code="permission_denied")
    role = Role(workspace_id=workspace_id, name=name, permissions=sorted(perms))
    insert_unique(session, role, f"a role named {name!r} exists", "name_taken")
    return role


def delete_role(session: Session, ctx: RequestContext, workspace_id: str, ref: str) -> None:
    require_in(session, ctx, workspace_id, "member:edit")
    role = lookup(session, Role, workspace_id, ref, "role")  # only the workspace's own roles
    used = session.scalar(select(func.count()).where(Membership.role_id == role.id)) or 0
    used += (
        session.scalar(select(func.count()).where(ApiToken.role_id == role.id, ApiToken.revoked_at.is_(None)))
        or 0
    )
    if used:
        raise InUse(f"role {role.name!r} is given to {used} member(s) or token(s)", code="role_in_use")
    session.delete(role)
