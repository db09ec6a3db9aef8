"""Refuse oversized request bodies before they are read into memory, whatever their content type.

FastAPI reads a route's whole body before it runs the route's dependencies (authentication among
them), so without this anyone could make the server hold any amount of memory without a token.
Every ordinary request of the API is small (names, specs, credentials): its body is read here, up
to the limit, and handed on in one piece; a declared Content-Length over the limit is refused at
once, a chunked body as soon as it has passed the limit.

The few routes that genuinely take big bodies (image uploads, project files) are marked with
``streamed_body``: they pass through untouched, authenticate before reading a byte (their
dependencies run first, and they declare no body parameter FastAPI would read), then stream the
body to disk with their own limits. When such a route answers without having read its body (a 401,
a bad name) the connection is closed after the answer, so the client stops sending.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1024 * 1024

F = TypeVar("F", bound=Callable[..., Any])
StreamedRoute = tuple[frozenset[str], re.Pattern[str]]


def streamed_body(endpoint: F) -> F:
    """Mark a route endpoint that reads its own body as a stream, after authentication, with its
    own size limit: the body limit leaves its requests alone."""
    endpoint.streamed_body = True  # type: ignore[attr-defined]
    return endpoint


def streamed_routes(routers: Iterable[APIRouter], prefix: str = "") -> list[StreamedRoute]:
    """The (methods, path pattern) of the routes marked with ``streamed_body``, as they are
    served once the routers are included under ``prefix``."""
    found: list[StreamedRoute] = []
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and getattr(route.endpoint, "streamed_body", False):
                pattern, _, _ = compile_path(prefix + route.path)
                found.append((frozenset(route.methods or ()), pattern))
    return found


class BodyLimit:
    def __init__(
        self, app: ASGIApp, limit: int = MAX_BODY_BYTES, streamed: Iterable[StreamedRoute] = ()
    ) -> None:
        self.app = app
        self.limit = limit
        self.streamed = list(streamed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._is_streamed(scope):
            await self._pass_streamed(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
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

    def _is_streamed(self, scope: Scope) -> bool:
        path, method = scope.get("path", ""), scope.get("method", "")
        return any(method in methods and pattern.match(path) for methods, pattern in self.streamed)

    async def _pass_streamed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand the request on as it is; an answer given before the body was read closes the
        connection (the rest of the body is never read)."""
        finished = False

        async def watched_receive() -> Message:
            nonlocal finished
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                finished = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not finished:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, watched_receive, closing_send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "type": "https://cloudlet.dev/problems/body_too_large",
                "title": "Request body too large",
                "status": 413,
                "detail": f"request bodies are limited to {self.limit} bytes here",
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
                    (b"connection", b"close"),  # the rest of the body is not read
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return bytes(value).decode("latin-1").strip()
    return None


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
