"""Issue 13, finding 2: a request body of any content type is limited before authentication (FastAPI
reads a route's body before its dependencies run), and the routes that stream big bodies
authenticate before reading a byte of it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request

from cloudlet.api.app import API_PREFIX, create_app
from cloudlet.api.limits import BodyLimit, streamed_body, streamed_routes
from cloudlet.config import Settings
from tests.unit.conftest import SimCloud

LIMIT = 1024


class Recorder:
    """An ASGI app that reads its whole body and answers 200 with its size."""

    def __init__(self) -> None:
        self.calls = 0
        self.sizes: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.sizes.append(size)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


def call(
    app: Any,
    chunks: list[bytes],
    *,
    path: str = "/x",
    method: str = "POST",
    length: int | None = None,
    content_type: str = "text/plain",
) -> tuple[int, dict[bytes, bytes], int]:
    """Run one request through ``app``: (status, response headers, body messages the app pulled)."""
    headers = [(b"content-type", content_type.encode())] if content_type else []
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b""}
    pending = list(chunks)
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if not pending:
            return {"type": "http.disconnect"}
        pulled += 1
        body = pending.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start.get("headers", [])), pulled


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    inner = Recorder()
    status, headers, pulled = call(BodyLimit(inner, LIMIT), [b"x" * 10], length=LIMIT + 1)
    assert (status, pulled, inner.calls) == (413, 0, 0)
    assert headers[b"connection"] == b"close"


def test_a_chunked_body_is_counted_as_it_comes() -> None:
    inner = Recorder()
    chunks = [b"x" * 300] * 100  # 30 KB, no Content-Length
    status, _, pulled = call(BodyLimit(inner, LIMIT), chunks)
    assert (status, inner.calls) == (413, 0)
    assert pulled == 4  # stopped at the first chunk past 1024 bytes


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/json", "multipart/form-data", "application/octet-stream", ""]
)
def test_every_content_type_is_limited(content_type: str) -> None:
    inner = Recorder()
    app = BodyLimit(inner, LIMIT)
    assert call(app, [b"x" * (LIMIT + 1)], content_type=content_type)[0] == 413
    assert call(app, [b"x" * 500, b"x" * 524], length=LIMIT, content_type=content_type)[0] == 200
    assert inner.sizes == [LIMIT]  # handed on whole


def test_streamed_routes_pass_untouched_and_an_early_answer_closes() -> None:
    router = APIRouter(prefix="/files")

    @router.put("/{name}")
    @streamed_body
    async def put(request: Request, name: str) -> dict[str, int]:
        if name == "refuse":  # answers without reading (as a 401 from its dependencies does)
            return {"size": -1}
        return {"size": sum([len(c) async for c in request.stream()])}

    app = FastAPI()
    app.include_router(router, prefix="/api")
    limited = BodyLimit(app, LIMIT, streamed=streamed_routes([router], "/api"))
    big = [b"x" * 1000] * 50
    assert call(limited, big, path="/api/files/a", method="PUT")[0] == 200
    status, headers, pulled = call(limited, big, path="/api/files/refuse", method="PUT")
    assert (status, pulled, headers.get(b"connection")) == (200, 0, b"close")
    assert call(limited, big, path="/api/files/a", method="POST")[0] == 413  # another method is not streamed
    assert call(limited, big, path="/api/other", method="PUT")[0] == 413


def test_the_app_streams_exactly_the_upload_routes() -> None:
    app = create_app(Settings(vm_driver="sim", container_driver="none"))
    limit = next(m for m in app.user_middleware if m.cls is BodyLimit)
    streamed = {(tuple(sorted(methods)), p.pattern) for methods, p in limit.kwargs["streamed"]}
    assert streamed == {
        (("POST",), f"^{API_PREFIX}/images/upload$"),
        (("PUT",), f"^{API_PREFIX}/projects/(?P<name>[^/]+)/files/(?P<path>.*)$"),
    }


class CountingBody:
    """A request body that counts the chunks anybody took from it."""

    def __init__(self, chunks: int, size: int = 64 * 1024) -> None:
        self.chunks, self.size, self.taken = chunks, size, 0

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            self.taken += 1
            yield b"x" * self.size


def test_a_big_text_body_to_a_json_route_is_refused_before_authentication(shared_sim: SimCloud) -> None:
    resp = shared_sim.client.post(
        "/api/v1/images", content=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "text/plain"}
    )
    assert resp.status_code == 413, resp.text  # not 401: nothing was read past the limit
    assert resp.json()["code"] == "body_too_large"
    with_token = shared_sim.post("/api/v1/auth/login", content=b"x" * (2 * 1024 * 1024))
    assert with_token.status_code == 413


@pytest.mark.parametrize(
    "path,method", [("/api/v1/images/upload?name=x", "POST"), ("/api/v1/projects/p/files/a.txt", "PUT")]
)
def test_upload_routes_authenticate_before_reading_the_body(
    shared_sim: SimCloud, path: str, method: str
) -> None:
    body = CountingBody(160)  # 10 MiB
    resp = shared_sim.client.request(
        method, path, content=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert resp.status_code == 401
    assert body.taken == 0  # not a byte was asked for
    wrong = CountingBody(160)
    resp = shared_sim.client.request(
        method,
        path,
        content=wrong,
        headers={"Authorization": "Bearer clt_wrong", "Content-Type": "text/plain"},
    )
    assert (resp.status_code, wrong.taken) == (401, 0)
