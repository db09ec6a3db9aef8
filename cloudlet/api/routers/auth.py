"""Sign-in (password), token refresh and sign-out, the caller's own account, and user admin."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from cloudlet.api.deps import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    REFRESH_COOKIE,
    CloudDep,
    Ctx,
    check_csrf,
    context_for,
)
from cloudlet.db.models import User
from cloudlet.db.session import transaction
from cloudlet.errors import CloudletError, Forbidden, Unauthorized
from cloudlet.services import logins, users
from cloudlet.services.cloud import Cloud
from cloudlet.services.workspaces import visible_workspaces

router = APIRouter(tags=["auth"])

# Bodies are small: a long field is refused by validation, never hashed.
Username = Field(min_length=1, max_length=64)
Password = Field(min_length=1, max_length=users.MAX_PASSWORD)


class LoginRequest(BaseModel):
    username: str = Username
    password: str = Password


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=256)


class TokenPairPublic(BaseModel):
    access_token: str = Field(description="A JWT for `Authorization: Bearer`; short-lived.")
    refresh_token: str = Field(description="Trade it at /auth/refresh for a new pair; each works once.")
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds the access token is valid.")


class PasswordChange(BaseModel):
    current_password: str = Password
    new_password: str = Password


class UserCreate(BaseModel):
    username: str = Username
    password: str | None = Field(None, max_length=users.MAX_PASSWORD)
    display_name: str | None = Field(None, max_length=128)
    is_admin: bool = False


class UserUpdate(BaseModel):
    disabled: bool | None = None
    is_admin: bool | None = None
    display_name: str | None = Field(None, max_length=128)
    password: str | None = Field(None, max_length=users.MAX_PASSWORD)


class UserPublic(BaseModel):
    id: str
    username: str
    display_name: str | None
    is_admin: bool
    disabled: bool
    created_at: datetime


class MembershipPublic(BaseModel):
    workspace_id: str
    workspace: str
    role: str


class MePublic(UserPublic):
    workspace_id: str = Field(description="The workspace this request ran in.")
    role: str
    permissions: list[str]
    workspaces: list[MembershipPublic]


def user_public(u: User) -> UserPublic:
    return UserPublic(
        id=u.id,
        username=u.username,
        display_name=u.display_name,
        is_admin=u.is_admin,
        disabled=u.disabled_at is not None,
        created_at=u.created_at,
    )


def _pair(pair: logins.TokenPair) -> TokenPairPublic:
    return TokenPairPublic(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


def _source(request: Request) -> str:
    """The client's address: the connection's, or what a configured proxy (``trusted_proxies``)
    forwarded; never a header from anyone else."""
    return request.client.host if request.client else "unknown"


@router.post("/auth/login", response_model=TokenPairPublic)
def login(body: LoginRequest, request: Request, cloud: CloudDep) -> TokenPairPublic:
    """Sign in with a password. Unknown user and wrong password give the same 401. Failures
    slow down the account and address they came from, and an address trying many accounts: past
    a few, each attempt waits longer (429 with Retry-After); other addresses are not held up."""
    account, source = f"user:{body.username}", _source(request)
    cloud.throttle.attempt(account, source)
    with transaction(cloud.db.sessions) as s:
        user = users.verify_login(s, body.username, body.password)
        pair = logins.start_login(s, cloud.jwt_key, user)
    cloud.throttle.succeeded(account, source)
    return _pair(pair)


@router.post("/auth/signup", response_model=TokenPairPublic, status_code=201)
def signup(body: LoginRequest, request: Request, cloud: CloudDep) -> TokenPairPublic:
    """Create an account and sign in; only when an admin set `allow_signup`. Refused sign-ups
    (a name taken) count like failed sign-ins of the address, so names cannot be listed fast."""
    if not cloud.settings.allow_signup:
        raise Forbidden("self sign-up is off on this server", code="signup_disabled")
    account, source = f"signup:{body.username}", _source(request)
    cloud.throttle.attempt(account, source)
    with transaction(cloud.db.sessions) as s:
        user = users.create_user(s, body.username, body.password)
        pair = logins.start_login(s, cloud.jwt_key, user)
    cloud.throttle.succeeded(account, source)
    return _pair(pair)


@router.post("/auth/refresh", response_model=TokenPairPublic)
def refresh(body: RefreshRequest, cloud: CloudDep) -> TokenPairPublic:
    """Trade a refresh token for a new pair. A refresh token works once: using one again
    revokes the whole sign-in (401 `refresh_reused`)."""
    error: CloudletError | None
    with transaction(cloud.db.sessions) as s:
        pair, error = logins.refresh_login(s, cloud.jwt_key, body.refresh_token)
    if error is not None:  # raised after the commit, so a detected reuse stays revoked
        raise error
    assert pair is not None
    return _pair(pair)


@router.post("/auth/logout", status_code=204)
def logout(body: RefreshRequest, cloud: CloudDep) -> Response:
    """End a sign-in: its refresh token and every access token of it stop working at once."""
    with transaction(cloud.db.sessions) as s:
        logins.logout(s, body.refresh_token)
    return Response(status_code=204)


@router.get("/auth/me", response_model=MePublic)
def me(cloud: CloudDep, ctx: Ctx) -> MePublic:
    """The caller: account, current workspace, role and permissions, and every membership."""
    with cloud.db.reads() as s:
        user = users.get_user(s, ctx.user_id or "")
        spaces = [
            MembershipPublic(workspace_id=ws.id, workspace=ws.name, role=role)
            for ws, role in visible_workspaces(s, ctx)
        ]
        return MePublic(
            **user_public(user).model_dump(),
            workspace_id=ctx.workspace_id,
            role=ctx.role,
            permissions=sorted(ctx.permissions),
            workspaces=spaces,
        )


class PasswordChanged(BaseModel):
    """The caller's fresh sign-in after a password change: a token pair for a bearer caller, or
    (for a browser session) new cookies set by the answer and the new CSRF token here."""

    access_token: str | None = Field(None, description="A new access token (bearer callers).")
    refresh_token: str | None = Field(None, description="A new refresh token (bearer callers).")
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds the new access token is valid.")
    csrf_token: str | None = Field(None, description="The new CSRF token (browser sessions).")


def _cookie_session(request: Request) -> bool:
    """Whether the request authenticated with the session cookies (no Authorization header)."""
    return "authorization" not in request.headers and ACCESS_COOKIE in request.cookies


@router.post("/auth/password", response_model=PasswordChanged)
def change_password(
    body: PasswordChange, request: Request, response: Response, cloud: CloudDep, ctx: Ctx
) -> PasswordChanged:
    """Change your own password (the current one is asked again; wrong guesses are slowed as
    sign-ins are). Everything issued under the old one is revoked: every sign-in of the account
    (their refresh and access tokens), every API token and unused console ticket. The caller
    gets a fresh sign-in in the answer (a token pair), or new cookies for a browser session."""
    if ctx.user_id is None:
        raise Forbidden("only users have passwords", code="permission_denied")
    account, source = f"user:{ctx.principal}", _source(request)
    cloud.throttle.attempt(account, source)
    with transaction(cloud.db.sessions) as s:
        user = users.get_user(s, ctx.user_id)
        users.change_password(s, user, body.current_password, body.new_password)
        pair = logins.start_login(s, cloud.jwt_key, user)
    cloud.throttle.succeeded(account, source)
    if _cookie_session(request):
        csrf = _set_session_cookies(response, request, pair)
        return PasswordChanged(expires_in=pair.expires_in, csrf_token=csrf)
    return PasswordChanged(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


# -- user admin (system admins) -------------------------------------------------------------------
def _require_admin(ctx: Ctx) -> None:
    ctx.require_admin("manage users")


@router.get("/users", response_model=list[UserPublic], tags=["users"])
def list_users(cloud: CloudDep, ctx: Ctx) -> list[UserPublic]:
    """Every account (system admins only)."""
    _require_admin(ctx)
    with cloud.db.reads() as s:
        return [user_public(u) for u in s.scalars(select(User).order_by(User.username))]


@router.post("/users", response_model=UserPublic, status_code=201, tags=["users"])
def create_user(body: UserCreate, cloud: CloudDep, ctx: Ctx) -> UserPublic:
    """Create an account (system admins only); without a password it can only use OIDC."""
    _require_admin(ctx)
    with transaction(cloud.db.sessions) as s:
        user = users.create_user(
            s, body.username, body.password, is_admin=body.is_admin, display_name=body.display_name
        )
        return user_public(user)


@router.patch("/users/{ref}", response_model=UserPublic, tags=["users"])
def update_user(ref: str, body: UserUpdate, cloud: CloudDep, ctx: Ctx) -> UserPublic:
    """Disable or enable an account, make or unmake a system admin, rename it, or set a new
    password (system admins only). Disabling it or setting a password revokes every sign-in, API
    token and console ticket it had, at once (yours too, if you set your own: use
    `POST /auth/password` to keep a session); enabling it again revives none of them."""
    _require_admin(ctx)
    with transaction(cloud.db.sessions) as s:
        user = users.get_user(s, ref)
        if user.id == ctx.user_id and (body.disabled or body.is_admin is False):
            raise Forbidden("you cannot disable or demote yourself", code="permission_denied")
        if body.disabled is not None:
            users.set_disabled(user, body.disabled)
        if body.is_admin is not None:
            user.is_admin = body.is_admin
        if body.display_name is not None:
            user.display_name = body.display_name
        if body.password is not None:
            users.set_password(s, user, body.password)
        return user_public(user)


# -- browser sessions (cookies) -------------------------------------------------------------------
class SessionPublic(BaseModel):
    username: str
    csrf_token: str = Field(description="Send it back as `X-CSRF-Token` on every change.")
    expires_in: int


def _set_session_cookies(response: Response, request: Request, pair: logins.TokenPair) -> str:
    csrf = secrets.token_urlsafe(24)
    secure = request.url.scheme == "https"
    common: dict[str, Any] = {"secure": secure, "samesite": "strict"}
    response.set_cookie(
        ACCESS_COOKIE, pair.access_token, max_age=pair.expires_in, httponly=True, path="/", **common
    )
    response.set_cookie(
        REFRESH_COOKIE,
        pair.refresh_token,
        max_age=int(logins.REFRESH_TTL.total_seconds()),
        httponly=True,
        path="/api/v1/auth/session",
        **common,
    )
    # readable by the dashboard's script, which echoes it in a header: the double-submit check
    response.set_cookie(
        CSRF_COOKIE, csrf, max_age=int(logins.REFRESH_TTL.total_seconds()), path="/", **common
    )
    return csrf


class SessionState(BaseModel):
    active: bool = Field(description="The access cookie is valid: API calls will succeed.")
    refreshable: bool = Field(
        description="A refresh cookie is here: `POST /auth/session/refresh` may renew the session."
    )


@router.get("/auth/session", response_model=SessionState)
def session_state(request: Request, cloud: CloudDep) -> SessionState:
    """Whether this browser is signed in, answered without a 401: the dashboard asks before its
    first call, so a signed-out visit leaves no failed request in the browser's console."""
    secret = request.cookies.get(ACCESS_COOKIE)
    active = False
    if secret:
        try:
            context_for(cloud, secret, None, _source(request))
            active = True
        except CloudletError:
            pass
    return SessionState(active=active, refreshable=REFRESH_COOKIE in request.cookies)


@router.post("/auth/session", response_model=SessionPublic)
def start_session(body: LoginRequest, request: Request, response: Response, cloud: CloudDep) -> SessionPublic:
    """Sign in a browser: the tokens go into HttpOnly, SameSite=Strict cookies (Secure over
    TLS), never into the page; changes then need the `X-CSRF-Token` header."""
    pair = login(body, request, cloud)
    with cloud.db.reads() as s:
        user = users.get_user(s, body.username)
    internal = logins.TokenPair(pair.access_token, pair.refresh_token, pair.expires_in)
    csrf = _set_session_cookies(response, request, internal)
    return SessionPublic(username=user.username, csrf_token=csrf, expires_in=pair.expires_in)


def _renewed_session(
    pair: TokenPairPublic, request: Request, response: Response, cloud: Cloud
) -> SessionPublic:
    """Put a freshly refreshed pair into the session cookies."""
    claims = logins.decode_access(cloud.jwt_key, pair.access_token)
    with cloud.db.reads() as s:
        user = users.get_user(s, str(claims["sub"]))
    internal = logins.TokenPair(pair.access_token, pair.refresh_token, pair.expires_in)
    csrf = _set_session_cookies(response, request, internal)
    return SessionPublic(username=user.username, csrf_token=csrf, expires_in=pair.expires_in)


@router.post("/auth/session/adopt", response_model=SessionPublic)
def adopt_session(
    body: RefreshRequest, request: Request, response: Response, cloud: CloudDep
) -> SessionPublic:
    """Turn a token pair a page was handed (the OpenID Connect sign-in puts it in the URL fragment
    of a dashboard page) into a cookie session. The refresh token is spent at once, so the pair
    that passed through the address bar is worthless from then on."""
    pair = refresh(body, cloud)
    return _renewed_session(pair, request, response, cloud)


@router.post("/auth/session/refresh", response_model=SessionPublic)
def refresh_session(request: Request, response: Response, cloud: CloudDep) -> SessionPublic:
    """Renew a browser session from its refresh cookie (CSRF header required)."""
    check_csrf(request)
    secret = request.cookies.get(REFRESH_COOKIE)
    if not secret:
        raise Unauthorized("no session to refresh", code="missing_token")
    pair = refresh(RefreshRequest(refresh_token=secret), cloud)
    return _renewed_session(pair, request, response, cloud)


@router.delete("/auth/session", status_code=204)
def end_session(request: Request, cloud: CloudDep) -> Response:
    """Sign a browser out: the login is revoked and the cookies cleared."""
    check_csrf(request)
    secret = request.cookies.get(REFRESH_COOKIE)
    if secret:
        with transaction(cloud.db.sessions) as s:
            logins.logout(s, secret)
    response = Response(status_code=204)
    for name, path in ((ACCESS_COOKIE, "/"), (REFRESH_COOKIE, "/api/v1/auth/session"), (CSRF_COOKIE, "/")):
        response.delete_cookie(name, path=path)
    return response
