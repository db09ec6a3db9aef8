"""Issue 13, the OS Cloud listener: loopback only by default, the Host header checked (DNS
rebinding), an optional bearer token. The guard on a tiny app, the listen-address rules, and the
OS Cloud app behind it (the real listener is tried in tests/integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from cloudlet.compat.guard import (
    Listen,
    ListenerGuard,
    UnsafeListener,
    check_exposure,
    host_name,
    parse_listen,
)
from cloudlet.compat.oscloud import create_oscloud_app
from cloudlet.config import Settings

TOKEN = "s3cret-token-for-tests"


def tiny_app(listen: Listen = Listen("127.0.0.1", 5000), **guard: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/")
    def hello() -> PlainTextResponse:
        return PlainTextResponse("hello")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    app.add_middleware(ListenerGuard, listen=listen, **guard)
    return app


def get(app: FastAPI, host: str | None, **headers: str) -> httpx.Response:
    with TestClient(app) as client:
        if host is not None:
            headers["host"] = host
        response: httpx.Response = client.get("/", headers=headers)
        return response


def test_a_foreign_host_name_is_refused_and_loopback_names_answer() -> None:
    app = tiny_app()
    refused = get(app, "evil.example")
    assert refused.status_code == 403 and refused.json()["code"] == "host_not_allowed"
    assert get(app, "evil.example:5000").status_code == 403
    assert get(app, "testserver").status_code == 403
    for host in ("localhost:5000", "localhost", "127.0.0.1:5000", "[::1]:5000", "LOCALHOST:5000"):
        answer = get(app, host)
        assert answer.status_code == 200 and answer.text == "hello", host


def test_allowed_names_and_the_listen_address_answer() -> None:
    app = tiny_app(Listen("10.1.2.3", 5000), allowed_hosts=["Cloud.Example:5000"], token=TOKEN)
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert get(app, "cloud.example:5000", **auth).status_code == 200
    assert get(app, "10.1.2.3:5000", **auth).status_code == 200
    assert get(app, "other.example", **auth).status_code == 403


def test_a_token_when_set_is_required() -> None:
    app = tiny_app(token=TOKEN)
    missing = get(app, "localhost:5000")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert get(app, "localhost:5000", authorization="Bearer nope").status_code == 401
    assert get(app, "localhost:5000", authorization=f"Basic {TOKEN}").status_code == 401
    assert get(app, "localhost:5000", authorization=f"Bearer {TOKEN}").status_code == 200


def test_websockets_are_guarded_too() -> None:
    with TestClient(tiny_app()) as client:
        with (
            pytest.raises(WebSocketDisconnect),
            client.websocket_connect("/ws", headers={"host": "evil.example"}),
        ):
            pass
        with client.websocket_connect("/ws", headers={"host": "localhost:5000"}) as ws:
            assert ws.receive_text() == "hi"


def test_host_names_are_read_without_their_port() -> None:
    assert host_name("LocalHost:5000") == "localhost"
    assert host_name("[::1]:5000") == "::1"
    assert host_name("example.com.") == "example.com"
    assert host_name("") == ""


def test_a_bare_port_listens_on_loopback() -> None:
    assert parse_listen("5000", setting="x") == Listen("127.0.0.1", 5000)
    assert parse_listen(":5000", setting="x") == Listen("127.0.0.1", 5000)
    assert parse_listen("[::1]:5000", setting="x") == Listen("::1", 5000)
    assert parse_listen("0.0.0.0:5000", setting="x") == Listen("0.0.0.0", 5000)
    for bad in ("nope", "::1:5000", "host:70000", ""):
        with pytest.raises(UnsafeListener):
            parse_listen(bad, setting="x")


def test_an_address_off_loopback_needs_a_token() -> None:
    for safe in ("5000", "127.0.0.1:5000", "localhost:5000", "[::1]:5000", "127.0.0.2:5000"):
        check_exposure(parse_listen(safe, setting="x"), None, setting="x", token_setting="t")
    for exposed in ("0.0.0.0:5000", "[::]:5000", "10.0.0.5:5000", "myhost:5000"):
        with pytest.raises(UnsafeListener, match="set t"):
            check_exposure(parse_listen(exposed, setting="x"), None, setting="x", token_setting="t")
        check_exposure(parse_listen(exposed, setting="x"), TOKEN, setting="x", token_setting="t")


def test_the_oscloud_app_refuses_foreign_hosts_in_its_own_error_shape(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, oscloud_listen="5000")
    app = create_oscloud_app(FastAPI(), settings)
    with TestClient(app, base_url="http://localhost:5000") as client:
        assert "Welcome" in client.get("/").text  # what curl localhost:5000 sends
        refused = client.get("/", headers={"host": "evil.example"})
        assert refused.status_code == 403 and refused.json()["status"] == "error"
        assert (
            refused.json()["error_msg"] == refused.json()["error"]
            and refused.json()["code"] == "host_not_allowed"
        )
        assert client.post("/vm_start", json={"id": 1}, headers={"host": "evil.example"}).status_code == 403


def test_the_oscloud_app_is_not_built_for_an_exposed_address_without_a_token(tmp_path: Path) -> None:
    with pytest.raises(UnsafeListener, match="oscloud_token"):
        create_oscloud_app(FastAPI(), Settings(data_dir=tmp_path, oscloud_listen="0.0.0.0:5000"))
    exposed = Settings(data_dir=tmp_path, oscloud_listen="0.0.0.0:5000", oscloud_token=TOKEN)
    with TestClient(create_oscloud_app(FastAPI(), exposed), base_url="http://localhost:5000") as client:
        assert client.get("/").status_code == 401
        assert client.get("/", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
