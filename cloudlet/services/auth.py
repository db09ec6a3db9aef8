"""Who a bearer secret is, in which workspace, with which permissions.

Two kinds of bearer: API tokens (``clt_...``: random, stored as SHA-256, bound to one user, one
workspace and one role, with an optional expiry) and the JWT access tokens of a sign-in. Both are
checked against the live database on every request, so revoking a token, disabling a user or
removing a membership takes effect at once. A token's permissions are its role's, and never more
than its user holds in that workspace now; a system admin's token holds the system admin's powers
only when its role is the built-in owner (a token never grants more than it holds).

What was issued stands for the access it was issued under: ``revoke_credentials`` ends a user's
API tokens and unused console tickets (all of them, or one workspace's) when that access changes.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session, aliased

from cloudlet.db.models import (
    DEFAULT_WORKSPACE,
    ApiToken,
    ConsoleTicket,
    Membership,
    Role,
    User,
    Workspace,
    utcnow,
)
from cloudlet.errors import Forbidden, NotFound, Unauthorized
from cloudlet.services.context import RequestContext
from cloudlet.services.logins import decode_access, login_active
from cloudlet.services.names import is_uuid
from cloudlet.services.permissions import ALL_PERMISSIONS, BUILTIN_ROLES

TOKEN_PREFIX = "clt_"
BOOTSTRAP_ADMIN = "admin"
OWNER = "owner"  # the built-in role that alone may make owners


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_default_workspace(session: Session) -> Workspace:
    ws = session.scalar(select(Workspace).where(Workspace.name == DEFAULT_WORKSPACE))
    if ws is None:
        ws = Workspace(name=DEFAULT_WORKSPACE)
        session.add(ws)
        session.flush()
    return ws


def ensure_builtin_roles(session: Session) -> dict[str, Role]:
    roles = {r.name: r for r in session.scalars(select(Role).where(Role.workspace_id.is_(None)))}
    for name, permissions in BUILTIN_ROLES.items():
        if name not in roles:
            roles[name] = Role(workspace_id=None, name=name, permissions=sorted(permissions))
            session.add(roles[name])
        elif set(roles[name].permissions) != permissions:  # a newer release widened a built-in role
            roles[name].permissions = sorted(permissions)
    session.flush()
    return roles


def find_role(session: Session, workspace_id: str, name_or_id: str) -> Role:
    """A built-in role by name, or one of the workspace's custom roles by name or id."""
    column = Role.id if is_uuid(name_or_id) else Role.name
    role = session.scalar(
        select(Role).where(
            column == name_or_id, (Role.workspace_id == workspace_id) | Role.workspace_id.is_(None)
        )
    )
    if role is None:
        raise NotFound(f"role {name_or_id!r} not found", code="role_not_found")
    return role


def create_token(
    session: Session,
    name: str,
    *,
    user_id: str,
    workspace_id: str,
    role: Role,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Store a new token; return it with its secret (the only time the secret is visible)."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name,
        token_hash=hash_token(secret),
        prefix=secret[:10],
        role=role.name,
        role_id=role.id,
        user_id=user_id,
        workspace_id=workspace_id,
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return token, secret


def bootstrap(session: Session) -> str | None:
    """First start: the default workspace, the built-in roles, the ``admin`` user (a system
    admin, owner of the default workspace) and its first API token, returned once. Tokens of
    the foundation release (no user) are given to that admin, as owners of the default workspace."""
    ws = ensure_default_workspace(session)
    roles = ensure_builtin_roles(session)
    first_start = session.scalar(select(ApiToken.id).limit(1)) is None
    legacy = list(session.scalars(select(ApiToken).where(ApiToken.user_id.is_(None))))
    if not first_start and not legacy:
        return None
    admin = session.scalar(select(User).where(User.username == BOOTSTRAP_ADMIN))
    if admin is None:
        admin = User(username=BOOTSTRAP_ADMIN, is_admin=True, display_name="Administrator")
        session.add(admin)
        session.flush()
    if (
        session.scalar(
            select(Membership.id).where(Membership.user_id == admin.id, Membership.workspace_id == ws.id)
        )
        is None
    ):
        session.add(Membership(workspace_id=ws.id, user_id=admin.id, role_id=roles["owner"].id))
    for token in legacy:
        token.user_id, token.workspace_id = admin.id, token.workspace_id or ws.id
        token.role_id, token.role = roles["owner"].id, "owner"
    if not first_start:
        return None
    _, secret = create_token(session, "admin", user_id=admin.id, workspace_id=ws.id, role=roles["owner"])
    return secret


def _workspace(session: Session, ref: str) -> Workspace | None:
    column = Workspace.id if is_uuid(ref) else Workspace.name
    return session.scalar(select(Workspace).where(column == ref))


def membership_role(session: Session, user_id: str | None, workspace_id: str) -> Role | None:
    """The role a user holds in a workspace as a member (None if not one)."""
    return session.scalar(
        select(Role)
        .join(Membership, Membership.role_id == Role.id)
        .where(Membership.user_id == user_id, Membership.workspace_id == workspace_id)
    )


def _default_workspace_for(session: Session, user: User) -> Workspace | None:
    """The ``default`` workspace when the user may work there (system admins always), else the
    first of theirs by name: one query for members."""
    first = session.scalar(
        select(Workspace)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == user.id)
        .order_by(Workspace.name != DEFAULT_WORKSPACE, Workspace.name)
        .limit(1)
    )
    if user.is_admin and (first is None or first.name != DEFAULT_WORKSPACE):
        return session.scalar(select(Workspace).where(Workspace.name == DEFAULT_WORKSPACE)) or first
    return first


def _user_permissions(session: Session, user: User, workspace_id: str) -> tuple[str, frozenset[str]] | None:
    """The user's role name and permissions in a workspace; None when not a member (system
    admins are owners everywhere)."""
    role = membership_role(session, user.id, workspace_id)
    if role is not None:
        perms = frozenset(role.permissions)
        return role.name, (ALL_PERMISSIONS if user.is_admin else perms)
    if user.is_admin:
        return "owner", ALL_PERMISSIONS
    return None


def authenticate(
    session: Session, secret: str, *, key: str, workspace: str | None = None, source: str | None = None
) -> tuple[RequestContext, str | None]:
    """The request context of a bearer secret, and the API token id if its last use should be
    recorded (at most once a minute, so requests stay read-only and SQLite readers never queue).
    ``workspace`` (name or id) picks the workspace of a signed-in user; another workspace than an
    API token's own is a 404, like every resource the caller may not see."""
    if secret.startswith(TOKEN_PREFIX):
        return _token_context(session, secret, workspace, source)
    claims = decode_access(key, secret)
    if not login_active(session, str(claims["sid"])):
        raise Unauthorized("this sign-in was ended (signed out or revoked)", code="token_revoked")
    user = session.get(User, claims["sub"])
    if user is None or user.disabled_at is not None:
        raise Unauthorized("invalid access token", code="invalid_token")
    ws = _workspace(session, workspace) if workspace else _default_workspace_for(session, user)
    if ws is None:
        if workspace:
            raise NotFound(f"workspace {workspace!r} not found", code="workspace_not_found")
        return RequestContext(
            user.username, "", "none", source, user.id, None, frozenset(), user.is_admin, str(claims["sid"])
        ), None
    held = _user_permissions(session, user, ws.id)
    if held is None:
        raise NotFound(f"workspace {workspace or ws.name!r} not found", code="workspace_not_found")
    role, perms = held
    return RequestContext(
        user.username, ws.id, role, source, user.id, None, perms, user.is_admin, str(claims["sid"])
    ), None


_TOKEN_ROLE, _MEMBER_ROLE = aliased(Role), aliased(Role)
# Everything a token request needs, in one statement built once (every API call runs it).
_TOKEN_QUERY = (
    select(
        ApiToken.id,
        ApiToken.workspace_id,
        ApiToken.expires_at,
        ApiToken.last_used_at,
        ApiToken.role,
        User.id,
        User.username,
        User.is_admin,
        User.disabled_at,
        _TOKEN_ROLE.name,
        _TOKEN_ROLE.permissions,
        _TOKEN_ROLE.workspace_id,
        _MEMBER_ROLE.name,
        _MEMBER_ROLE.permissions,
    )
    .join(User, User.id == ApiToken.user_id)
    .outerjoin(_TOKEN_ROLE, _TOKEN_ROLE.id == ApiToken.role_id)
    .outerjoin(
        Membership, (Membership.user_id == User.id) & (Membership.workspace_id == ApiToken.workspace_id)
    )
    .outerjoin(_MEMBER_ROLE, _MEMBER_ROLE.id == Membership.role_id)
    .where(ApiToken.revoked_at.is_(None))
)
_TOKEN_BY_ID = _TOKEN_QUERY.where(ApiToken.id == bindparam("token_id"))
_TOKEN_BY_HASH = _TOKEN_QUERY.where(ApiToken.token_hash == bindparam("token_hash"))


def _token_context(
    session: Session, secret: str, workspace: str | None, source: str | None
) -> tuple[RequestContext, str | None]:
    row = session.execute(_TOKEN_BY_HASH, {"token_hash": hash_token(secret)}).first()
    if row is None:
        raise Unauthorized("invalid or revoked token", code="invalid_token")
    return _token_row_context(session, row, workspace, source)


def _token_row_context(
    session: Session, row: Any, workspace: str | None, source: str | None
) -> tuple[RequestContext, str | None]:
    invalid = Unauthorized("invalid or revoked token", code="invalid_token")
    (token_id, workspace_id, expires_at, last_used_at, legacy_role, user_id, username, is_admin,
     disabled_at, role_name, role_perms, role_workspace, member_role, member_perms) = row  # fmt: skip
    if workspace_id is None or disabled_at is not None:
        raise invalid
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise Unauthorized("this API token has expired", code="token_expired")
    if workspace:
        ws = _workspace(session, workspace)
        if ws is None or ws.id != workspace_id:
            raise NotFound(f"workspace {workspace!r} not found", code="workspace_not_found")
    if member_role is not None:
        held = ALL_PERMISSIONS if is_admin else frozenset(member_perms)
    elif is_admin:
        held = ALL_PERMISSIONS  # system admins are owners everywhere
    else:
        raise Unauthorized("the token's user is no longer a member of its workspace", code="invalid_token")
    token_perms = frozenset(role_perms) if role_name is not None else frozenset()
    owner_token = role_name == OWNER and role_workspace is None
    stale = last_used_at is None or (now - last_used_at).total_seconds() > 60
    ctx = RequestContext(
        principal=username,
        workspace_id=workspace_id,
        role=role_name if role_name is not None else legacy_role,
        source=source,
        user_id=user_id,
        token_id=token_id,
        permissions=token_perms & held,
        is_admin=is_admin and owner_token,  # a smaller role caps a system admin's token too
    )
    return ctx, token_id if stale else None


def live_context(
    session: Session,
    *,
    user_id: str | None,
    token_id: str | None,
    login_id: str | None,
    workspace_id: str,
    source: str | None = None,
) -> RequestContext:
    """The context a credential issued earlier (by an API token, or by a sign-in) holds in
    ``workspace_id`` now: 401 ``credential_revoked`` when the token or sign-in has ended or the
    user is disabled, 403 when the user is no longer a member there. For things handed out
    under a credential (console tickets) that must die with it."""
    revoked = Unauthorized("the credential this was issued under has ended", code="credential_revoked")
    if token_id is not None:
        row = session.execute(_TOKEN_BY_ID, {"token_id": token_id}).first()
        if row is None:
            raise revoked
        try:
            ctx, _ = _token_row_context(session, row, None, source)
        except Unauthorized:
            raise revoked from None
        if ctx.workspace_id != workspace_id or ctx.user_id != user_id:
            raise revoked
        return ctx
    user = session.get(User, user_id) if user_id is not None else None
    if user is None or user.disabled_at is not None:
        raise revoked
    if login_id is None or not login_active(session, login_id):
        raise revoked
    held = _user_permissions(session, user, workspace_id)
    if held is None:
        raise Forbidden("no longer a member of this workspace", code="permission_denied")
    role, perms = held
    return RequestContext(
        user.username, workspace_id, role, source, user.id, None, perms, user.is_admin, login_id=login_id
    )


def revoke_credentials(session: Session, user_id: str, workspace_id: str | None = None) -> None:
    """Revoke a user's API tokens and drop their unused console tickets, in one workspace or in
    all: what they held was issued for access they no longer have in that form (a password
    changed, a membership removed or its role changed). Revoked tokens stay revoked; re-adding
    the member later gives nothing back."""
    now = utcnow()
    tokens = update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    tickets = delete(ConsoleTicket).where(ConsoleTicket.user_id == user_id, ConsoleTicket.used_at.is_(None))
    if workspace_id is not None:
        tokens = tokens.where(ApiToken.workspace_id == workspace_id)
        tickets = tickets.where(ConsoleTicket.workspace_id == workspace_id)
    session.execute(tokens.values(revoked_at=now))
    session.execute(tickets)


def touch_token(session: Session, token_id: str) -> None:
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow()))
