"""Refuse oversized JSON bodies before they are read into memory: every JSON request of the API
is small (names, specs, credentials); big payloads (image uploads, project files) are streamed
as application/octet-stream by their own routes, which set their own limits."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_JSON_BYTES = 1024 * 1024


class JsonBodyLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_JSON_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._is_json(scope):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        # Read the body here, never more than the limit (the app would buffer it whole anyway),
        # then hand it on in one piece.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(message), send)
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(scope, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(
            scope, _replay({"type": "http.request", "body": bytes(body), "more_body": False}, receive), send
        )

    @staticmethod
    def _is_json(scope: Scope) -> bool:
        content_type: bytes = dict(scope.get("headers") or []).get(b"content-type", b"")
        return content_type.split(b";")[0].strip().lower().endswith(b"json")

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "type": "https://cloudlet.dev/problems/body_too_large",
                "title": "Request body too large",
                "status": 413,
                "detail": f"JSON bodies are limited to {self.limit} bytes",
                "code": "body_too_large",
                "instance": scope.get("path", ""),
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(first: Message, then: Receive | None = None) -> Receive:
    """A receive callable that gives ``first`` once, then defers to ``then`` (disconnects)."""
    given = False

    async def receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return first
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive
