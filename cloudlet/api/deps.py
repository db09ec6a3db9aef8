"""Request dependencies: the assembled cloud and the caller's context (auth + workspace scope)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from cloudlet.db.session import transaction
from cloudlet.errors import Unauthorized
from cloudlet.services.auth import authenticate, touch_token
from cloudlet.services.cloud import Cloud
from cloudlet.services.context import RequestContext

bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer clt_...`")


def get_cloud(request: Request) -> Cloud:
    cloud: Cloud = request.app.state.cloud
    return cloud


def context_for(cloud: Cloud, secret: str | None, source: str | None) -> RequestContext:
    if not secret:
        raise Unauthorized("an 'Authorization: Bearer <token>' header is required", code="missing_token")
    with cloud.db.reads() as s:
        ctx, touch = authenticate(s, secret, source=source)
    if touch is not None:
        with transaction(cloud.db.sessions) as s:
            touch_token(s, touch)
    return ctx


def get_context(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> RequestContext:
    source = request.client.host if request.client else None
    return context_for(get_cloud(request), creds.credentials if creds else None, source)


def websocket_context(websocket: WebSocket) -> RequestContext:
    """Browsers cannot set headers on websockets, so ``?token=`` is accepted there too."""
    header = websocket.headers.get("authorization", "")
    secret = header[7:] if header.lower().startswith("bearer ") else websocket.query_params.get("token")
    source = websocket.client.host if websocket.client else None
    cloud: Cloud = websocket.app.state.cloud
    return context_for(cloud, secret, source)


def read_session(cloud: Annotated[Cloud, Depends(get_cloud)]) -> Iterator[Session]:
    with cloud.db.reads() as s:
        yield s


CloudDep = Annotated[Cloud, Depends(get_cloud)]
Ctx = Annotated[RequestContext, Depends(get_context)]
ReadSession = Annotated[Session, Depends(read_session)]
