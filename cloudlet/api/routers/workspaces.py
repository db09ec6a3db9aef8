"""Workspaces, their members, custom roles and quotas; and the caller's API tokens."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from cloudlet.api.deps import CloudDep, Ctx
from cloudlet.db.models import ApiToken, Role, Workspace, utcnow
from cloudlet.db.session import transaction
from cloudlet.errors import Forbidden, Invalid, NotFound
from cloudlet.services import quotas, workspaces
from cloudlet.services.auth import create_token, find_role
from cloudlet.services.names import is_uuid

router = APIRouter(tags=["workspaces"])


class WorkspaceCreate(BaseModel):
    name: str = Field(max_length=63, examples=["team-a"])


class WorkspacePublic(BaseModel):
    id: str
    name: str
    role: str = Field(description="Your role in it.")
    created_at: datetime


class MemberAdd(BaseModel):
    username: str = Field(max_length=64)
    role: str = Field(max_length=64, description="owner, admin, operator, viewer or a custom role.")


class MemberUpdate(BaseModel):
    role: str = Field(max_length=64)


class MemberPublic(BaseModel):
    user_id: str
    username: str
    role: str
    since: datetime


class RoleCreate(BaseModel):
    name: str = Field(max_length=63)
    permissions: list[str] = Field(examples=[["instance:view", "instance:edit"]], max_length=64)


class RolePublic(BaseModel):
    id: str
    name: str
    builtin: bool
    permissions: list[str]


class QuotaPublic(BaseModel):
    limits: dict[str, int | None] = Field(description="null is unlimited")
    usage: dict[str, int]


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    workspace: str | None = Field(None, description="Name or id; default: the request's workspace.")
    role: str = Field("viewer", max_length=64, description="At most your own rights in that workspace.")
    expires_in_days: int | None = Field(90, ge=1, le=3650, description="null: never expires.")


class TokenPublic(BaseModel):
    id: str
    name: str
    prefix: str
    workspace_id: str | None
    role: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret, shown this once only; cloudlet keeps a hash.")


def ws_public(ws: Workspace, role: str) -> WorkspacePublic:
    return WorkspacePublic(id=ws.id, name=ws.name, role=role, created_at=ws.created_at)


def role_public(r: Role) -> RolePublic:
    return RolePublic(id=r.id, name=r.name, builtin=r.workspace_id is None, permissions=sorted(r.permissions))


def token_public(t: ApiToken) -> TokenPublic:
    return TokenPublic(
        id=t.id,
        name=t.name,
        prefix=t.prefix,
        workspace_id=t.workspace_id,
        role=t.role,
        created_at=t.created_at,
        expires_at=t.expires_at,
        last_used_at=t.last_used_at,
        revoked_at=t.revoked_at,
    )


@router.get("/workspaces", response_model=list[WorkspacePublic])
def list_workspaces(cloud: CloudDep, ctx: Ctx) -> list[WorkspacePublic]:
    """Your workspaces and your role in each."""
    with cloud.db.reads() as s:
        return [ws_public(ws, role) for ws, role in workspaces.visible_workspaces(s, ctx)]


@router.post("/workspaces", response_model=WorkspacePublic, status_code=201)
def create_workspace(body: WorkspaceCreate, cloud: CloudDep, ctx: Ctx) -> WorkspacePublic:
    """Make a workspace; you are its owner."""
    with transaction(cloud.db.sessions) as s:
        return ws_public(workspaces.create_workspace(s, ctx, body.name), "owner")


@router.get("/workspaces/{ref}", response_model=WorkspacePublic)
def get_workspace(ref: str, cloud: CloudDep, ctx: Ctx) -> WorkspacePublic:
    with cloud.db.reads() as s:
        ws, role = workspaces.get_workspace(s, ctx, ref)
        return ws_public(ws, role)


@router.delete("/workspaces/{ref}", status_code=204)
def delete_workspace(ref: str, cloud: CloudDep, ctx: Ctx) -> Response:
    """Delete an empty workspace (owners only); its tokens are revoked."""
    with transaction(cloud.db.sessions) as s:
        workspaces.delete_workspace(s, ctx, ref)
    return Response(status_code=204)


@router.get("/workspaces/{ref}/members", response_model=list[MemberPublic])
def list_members(ref: str, cloud: CloudDep, ctx: Ctx) -> list[MemberPublic]:
    with cloud.db.reads() as s:
        ws, _ = workspaces.get_workspace(s, ctx, ref)
        workspaces.require_in(s, ctx, ws.id, "member:view")
        return [
            MemberPublic(user_id=u.id, username=u.username, role=r.name, since=m.created_at)
            for u, r, m in workspaces.members(s, ws.id)
        ]


@router.post("/workspaces/{ref}/members", response_model=MemberPublic, status_code=201)
def add_member(ref: str, body: MemberAdd, cloud: CloudDep, ctx: Ctx) -> MemberPublic:
    """Add a user with a role (`member:create`): one holding no more than your credential does
    (a token's own role counts, not its user's); only owners make owners."""
    with transaction(cloud.db.sessions) as s:
        ws, _ = workspaces.get_workspace(s, ctx, ref)
        m = workspaces.add_member(s, ctx, ws.id, body.username, body.role)
        given = s.get(Role, m.role_id)
        return MemberPublic(
            user_id=m.user_id, username=body.username, role=given.name if given else "", since=m.created_at
        )


@router.patch("/workspaces/{ref}/members/{username}", response_model=MemberPublic)
def update_member(ref: str, username: str, body: MemberUpdate, cloud: CloudDep, ctx: Ctx) -> MemberPublic:
    """Change a member's role (`member:edit`), from and to roles you could give yourself; a
    workspace keeps at least one owner. The member's API tokens and unused console tickets for
    this workspace are revoked (they were made under the old role)."""
    with transaction(cloud.db.sessions) as s:
        ws, _ = workspaces.get_workspace(s, ctx, ref)
        m = workspaces.set_member_role(s, ctx, ws.id, username, body.role)
        given = s.get(Role, m.role_id)
        return MemberPublic(
            user_id=m.user_id, username=username, role=given.name if given else "", since=m.created_at
        )


@router.delete("/workspaces/{ref}/members/{username}", status_code=204)
def remove_member(ref: str, username: str, cloud: CloudDep, ctx: Ctx) -> Response:
    """Remove a member (`member:delete`): their API tokens and unused console tickets for the
    workspace are revoked at once, and stay revoked if they are added again."""
    with transaction(cloud.db.sessions) as s:
        ws, _ = workspaces.get_workspace(s, ctx, ref)
        workspaces.remove_member(s, ctx, ws.id, username)
    return Response(status_code=204)


@router.get("/workspaces/{ref}/roles", response_model=list[RolePublic])
def list_roles(ref: str, cloud: CloudDep, ctx: Ctx) -> list[RolePublic]:
    """Built-in and custom roles with their permissions."""
    with cloud.db.reads() as s:
        ws, _ = workspaces.get_workspace(s, ctx, ref)
        return [role_public(r) for r in workspaces.roles(s, ws.id)]


@router.post("/workspaces/{ref}/roles", response_model=RolePublic, status_code=201)
def create_role(ref: str, body: RoleCreate, cloud: CloudDep, ctx: Ctx) -> RolePublic:
    """A custom role from {instance, network, image, pool, member} x {view, create, edit, delete}
    (and audit:view); you cannot grant what you do not hold."""
    with transaction(cloud.db.sessions) as s:
        ws, _ = workspaces.get_workspace(s, ctx, ref)
        return role_public(workspaces.create_role(s, ctx, ws.id, body.name, body.permissions))


@router.delete("/workspaces/{ref}/roles/{role}", status_code=204)
def delete_role(ref: str, role: str, cloud: CloudDep, ctx: Ctx) -> Response:
    with transaction(cloud.db.sessions) as s:
        ws, _ = workspaces.get_workspace(s, ctx, ref)
        workspaces.delete_role(s, ctx, ws.id, role)
    return Response(status_code=204)


@router.get("/workspaces/{ref}/quota", response_model=QuotaPublic)
def get_quota(ref: str, cloud: CloudDep, ctx: Ctx) -> QuotaPublic:
    """Limits and current usage of a workspace."""
    with cloud.db.reads() as s:
        ws, _ = workspaces.get_workspace(s, ctx, ref)
        return QuotaPublic(limits=quotas.limits(s, ws.id), usage=quotas.usage(s, ws.id))


@router.put("/workspaces/{ref}/quota", response_model=QuotaPublic)
def set_quota(ref: str, body: dict[str, int | None], cloud: CloudDep, ctx: Ctx) -> QuotaPublic:
    """Set limits (system admins only): {"instances": 5, "memory_mb": 8192, "ips": null, ...}."""
    ctx.require_admin("set quotas")
    with transaction(cloud.db.sessions) as s:
        ws, _ = workspaces.get_workspace(s, ctx, ref)
        limits = quotas.set_limits(s, ws.id, body)
        return QuotaPublic(limits=limits, usage=quotas.usage(s, ws.id))


# -- API tokens -----------------------------------------------------------------------------------
@router.get("/tokens", response_model=list[TokenPublic], tags=["tokens"])
def list_tokens(cloud: CloudDep, ctx: Ctx) -> list[TokenPublic]:
    """Your API tokens (never their secrets)."""
    with cloud.db.reads() as s:
        rows = s.scalars(
            select(ApiToken).where(ApiToken.user_id == ctx.user_id).order_by(ApiToken.created_at)
        )
        return [token_public(t) for t in rows]


@router.post("/tokens", response_model=TokenCreated, status_code=201, tags=["tokens"])
def create_api_token(body: TokenCreate, cloud: CloudDep, ctx: Ctx) -> TokenCreated:
    """A named token for one workspace and one role, with an expiry. The secret is in this
    answer only. Its rights are never more than your credential's in that workspace (made with a
    token: that token's role), and only owners make owner tokens. A password change, and a
    removal from the workspace or a role change there, revoke it."""
    if ctx.user_id is None:
        raise Forbidden("only users make tokens", code="permission_denied")
    with transaction(cloud.db.sessions) as s:
        ws, _ = workspaces.get_workspace(s, ctx, body.workspace or ctx.workspace_id)
        role = find_role(s, ws.id, body.role)
        workspaces.check_grant(s, ctx, ws.id, role)
        expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
        token, secret = create_token(
            s, body.name, user_id=ctx.user_id, workspace_id=ws.id, role=role, expires_at=expires
        )
        return TokenCreated(**token_public(token).model_dump(), token=secret)


@router.delete("/tokens/{ref}", status_code=204, tags=["tokens"])
def revoke_token(ref: str, cloud: CloudDep, ctx: Ctx) -> Response:
    """Revoke one of your tokens (by id or name); it stops working at once."""
    with transaction(cloud.db.sessions) as s:
        column = ApiToken.id if is_uuid(ref) else ApiToken.name
        q = select(ApiToken).where(column == ref, ApiToken.revoked_at.is_(None))
        if not ctx.is_admin:
            q = q.where(ApiToken.user_id == ctx.user_id)
        tokens = list(s.scalars(q))
        if not tokens:
            raise NotFound(f"token {ref!r} not found", code="token_not_found")
        if len(tokens) > 1:
            raise Invalid(f"{len(tokens)} tokens are named {ref!r}; give the id", code="ambiguous_name")
        tokens[0].revoked_at = utcnow()
    return Response(status_code=204)


# -- audit ----------------------------------------------------------------------------------------
class AuditPublic(BaseModel):
    id: str
    at: datetime
    workspace_id: str | None
    user_id: str | None
    principal: str
    token_id: str | None
    action: str
    method: str
    path: str
    target: str | None
    source: str | None
    status: int
    result: str


def _audit_scope(cloud: CloudDep, ctx: Ctx, workspace: str | None) -> str | None:
    """The workspace whose log the caller may read: any (or all) for system admins, else one
    where they hold audit:view (owners and admins)."""
    if ctx.is_admin and workspace is None:
        return None
    with cloud.db.reads() as s:
        ws, _ = workspaces.get_workspace(s, ctx, workspace or ctx.workspace_id)
        workspaces.require_in(s, ctx, ws.id, "audit:view")
        return ws.id


@router.get("/audit", response_model=list[AuditPublic], tags=["audit"])
def audit_log(
    cloud: CloudDep,
    ctx: Ctx,
    workspace: str | None = Query(None, description="Name or id; system admins may leave it out for all."),
    user: str | None = Query(None, description="A user id."),
    action: str | None = Query(None, max_length=96, description="Actions containing this."),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[AuditPublic]:
    """Who did what, newest first (workspace owners and admins, system admins)."""
    scope = _audit_scope(cloud, ctx, workspace)
    rows = cloud.audit.query(
        workspace_id=scope, user_id=user, action=action, since=since, until=until, limit=limit, offset=offset
    )
    return [AuditPublic.model_validate(r, from_attributes=True) for r in rows]


@router.get("/audit/export", tags=["audit"], responses={200: {"content": {"application/x-ndjson": {}}}})
def audit_export(
    cloud: CloudDep, ctx: Ctx, workspace: str | None = None, since: datetime | None = None
) -> Response:
    """The log as JSON lines, oldest first, streamed."""
    scope = _audit_scope(cloud, ctx, workspace)
    return StreamingResponse(
        cloud.audit.export(workspace_id=scope, since=since), media_type="application/x-ndjson"
    )
