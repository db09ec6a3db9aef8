"""No secret in a URL: websockets once took ``?token=`` and ``?ticket=``, and URLs end up in access
logs, proxy logs and browser histories. Such a socket is now closed before any route sees it,
with a close code (4400) and a reason naming what to use instead. It is accepted only to carry
that reason: a socket refused before the handshake reaches the client as a bare HTTP 403."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

CLOSE_CODE = 4400
REASONS = {
    "token": "token_in_url: send the token in an Authorization header or the subprotocol bearer.<token>",
    "access_token": "token_in_url: send the token in an Authorization header or the subprotocol "
    "bearer.<token>",
    "ticket": "ticket_in_url: offer the console ticket as the subprotocol ticket.<ticket>",
}


def secret_in_query(query_string: bytes) -> str | None:
    """The name of the first secret-carrying parameter of a query string, if any."""
    for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name.lower() in REASONS:
            return name.lower()
    return None


class UrlSecretGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = secret_in_query(scope.get("query_string", b"")) if scope["type"] == "websocket" else None
        if name is None:
            await self.app(scope, receive, send)
            return
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": CLOSE_CODE, "reason": REASONS[name]})
