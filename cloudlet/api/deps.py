"""Request dependencies: the assembled cloud, the caller's context (who, which workspace, which
permissions) and the permission each route needs."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request, WebSocket
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from cloudlet.db.session import transaction
from cloudlet.errors import Forbidden, Unauthorized
from cloudlet.services.auth import authenticate, touch_token
from cloudlet.services.cloud import Cloud
from cloudlet.services.context import RequestContext

bearer = HTTPBearer(
    auto_error=False, description="An API token (`clt_...`) or the access token of a sign-in."
)
workspace_header = APIKeyHeader(
    name="X-Cloudlet-Workspace",
    auto_error=False,
    scheme_name="workspace",
    description="Workspace (name or id) for a signed-in user; API tokens are bound to theirs.",
)


ACCESS_COOKIE = "cloudlet_access"
REFRESH_COOKIE = "cloudlet_refresh"
CSRF_COOKIE = "cloudlet_csrf"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def check_csrf(request: Request) -> None:
    """Double-submit check for cookie sessions: a change must carry the CSRF cookie's value in
    the X-CSRF-Token header, which another site's page can neither read nor set."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get("x-csrf-token", "")
    if not cookie or not hmac.compare_digest(cookie, header):
        raise Forbidden("missing or wrong X-CSRF-Token header for a cookie session", code="csrf_failed")


def get_cloud(request: Request) -> Cloud:
    cloud: Cloud = request.app.state.cloud
    return cloud


def context_for(
    cloud: Cloud, secret: str | None, workspace: str | None, source: str | None
) -> RequestContext:
    if not secret:
        raise Unauthorized("an 'Authorization: Bearer <token>' header is required", code="missing_token")
    if len(secret) > 4096:
        raise Unauthorized("invalid token", code="invalid_token")
    with cloud.db.reads() as s:
        ctx, touch = authenticate(s, secret, key=cloud.jwt_key, workspace=workspace, source=source)
    if touch is not None:
        with transaction(cloud.db.sessions) as s:
            touch_token(s, touch)
    return ctx


def get_context(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    workspace: Annotated[str | None, Depends(workspace_header)],
) -> RequestContext:
    source = request.client.host if request.client else None
    workspace = workspace or request.query_params.get("workspace")
    secret = creds.credentials if creds else None
    if secret is None and ACCESS_COOKIE in request.cookies:  # a browser session
        if request.method not in SAFE_METHODS:
            check_csrf(request)
        secret = request.cookies[ACCESS_COOKIE]
    ctx = context_for(get_cloud(request), secret, workspace, source)
    request.state.ctx = ctx  # for the audit log
    return ctx


TOKEN_PROTOCOL = "bearer."  # a websocket subprotocol carrying a token: "bearer.<token>"


def offered_secret(websocket: WebSocket, prefix: str) -> str | None:
    """The secret of the first offered subprotocol ``<prefix><secret>``; such a subprotocol is
    never chosen when the socket is accepted, so the secret is not echoed back."""
    offered = websocket.scope.get("subprotocols") or []
    return next((p[len(prefix) :] for p in offered if p.startswith(prefix)), None)


def websocket_context(websocket: WebSocket) -> RequestContext:
    """Who opens a websocket: an ``Authorization: Bearer`` header (the CLI, the SDK), a
    ``bearer.<token>`` subprotocol (clients that cannot set headers), or the session cookie
    (browsers, from this server's own pages only). Never a URL parameter: URLs end up in logs,
    and ``UrlSecretGuard`` closes such sockets before they get here."""
    header = websocket.headers.get("authorization", "")
    secret = header[7:] if header.lower().startswith("bearer ") else offered_secret(websocket, TOKEN_PROTOCOL)
    cloud: Cloud = websocket.app.state.cloud
    if secret is None and ACCESS_COOKIE in websocket.cookies:
        # Browsers send cookies with any site's websocket: only our own pages (or allowed
        # origins) may use a cookie session, or a foreign page could drive the API.
        origin = websocket.headers.get("origin", "")
        own = {f"{scheme}://{websocket.headers.get('host', '')}" for scheme in ("http", "https")}
        if origin not in own and origin not in cloud.settings.cors_origins:
            raise Forbidden("cookie sessions work only from this server's own pages", code="csrf_failed")
        secret = websocket.cookies[ACCESS_COOKIE]
    workspace = websocket.headers.get("x-cloudlet-workspace") or websocket.query_params.get("workspace")
    source = websocket.client.host if websocket.client else None
    return context_for(cloud, secret, workspace, source)


def need(permission: str) -> Callable[[RequestContext], RequestContext]:
    """A dependency giving the caller's context once it holds ``permission`` (else 403)."""

    def check(ctx: Annotated[RequestContext, Depends(get_context)]) -> RequestContext:
        ctx.require(permission)
        return ctx

    check.__name__ = f"need_{permission.replace(':', '_')}"
    return check


def read_session(cloud: Annotated[Cloud, Depends(get_cloud)]) -> Iterator[Session]:
    with cloud.db.reads() as s:
        yield s


CloudDep = Annotated[Cloud, Depends(get_cloud)]
Ctx = Annotated[RequestContext, Depends(get_context)]
ReadSession = Annotated[Session, Depends(read_session)]


CanViewInstances = Annotated[RequestContext, Depends(need("instance:view"))]
CanCreateInstances = Annotated[RequestContext, Depends(need("instance:create"))]
CanEditInstances = Annotated[RequestContext, Depends(need("instance:edit"))]
CanDeleteInstances = Annotated[RequestContext, Depends(need("instance:delete"))]
CanViewNetworks = Annotated[RequestContext, Depends(need("network:view"))]
CanCreateNetworks = Annotated[RequestContext, Depends(need("network:create"))]
CanDeleteNetworks = Annotated[RequestContext, Depends(need("network:delete"))]
CanViewImages = Annotated[RequestContext, Depends(need("image:view"))]
CanCreateImages = Annotated[RequestContext, Depends(need("image:create"))]
CanEditImages = Annotated[RequestContext, Depends(need("image:edit"))]
CanDeleteImages = Annotated[RequestContext, Depends(need("image:delete"))]
