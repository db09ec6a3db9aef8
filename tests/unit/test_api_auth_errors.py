"""Every /api/v1 route refuses callers without a valid token, with an RFC 9457 problem+json body."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from starlette.websockets import WebSocketDisconnect

from cloudlet.api.app import create_app
from cloudlet.config import Settings
from tests.unit.conftest import SimCloud

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}
PATH_VALUES = {
    "ref": "web1",
    "op_id": "5f0c7a52-3f6e-4e58-9a53-6b1c1b1f0d2e",
    "action": "start",
    "name": "proj1",
    "path": "Dockerfile",
    "username": "someone",
    "role": "viewer",
    "vm": "vm1",
    "snapshot": "snap1",
    "volume": "vol1",
    "pool": "pool1",
}
# Routes that sign people in: they take credentials in the body, not a bearer token.
PUBLIC = {"/api/v1/auth/login", "/api/v1/auth/signup", "/api/v1/auth/refresh", "/api/v1/auth/logout"}
# Browser sessions: credentials in the body or in cookies (with the CSRF header).
PUBLIC |= {"/api/v1/auth/session", "/api/v1/auth/session/refresh", "/api/v1/auth/session/adopt"}
# OpenID Connect sign-in: the browser follows redirects there, with no bearer token.
PUBLIC |= {"/api/v1/auth/oidc/login", "/api/v1/auth/oidc/callback", "/api/v1/auth/oidc/config"}


def api_routes() -> list[tuple[str, str]]:
    """(method, path) of every HTTP route under /api/v1 (from the OpenAPI document), parameters filled."""
    app = create_app(Settings(vm_driver="sim"))  # builds routes only: the lifespan is not run
    out = []
    for template, methods in app.openapi()["paths"].items():
        if template.startswith("/api/v1") and template not in PUBLIC:
            path = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], template.replace(":path}", "}"))
            out += [(method.upper(), path) for method in sorted(methods)]
    return out


ROUTES = api_routes()


@pytest.fixture
def sim(shared_sim: SimCloud) -> SimCloud:
    """Every test here is refused or only reads, so the module shares one server."""
    return shared_sim


def assert_problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body.keys() >= PROBLEM_FIELDS
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith("/" + code)
    assert body["title"] and body["detail"]
    return body


def test_the_route_list_covers_the_whole_api() -> None:
    paths = {p for _, p in ROUTES}
    for expected in ("/api/v1/instances", "/api/v1/images/upload", "/api/v1/operations", "/api/v1/info"):
        assert expected in paths
    assert len(ROUTES) >= 17


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_without_token_is_401_problem(sim: SimCloud, method: str, path: str) -> None:
    resp = sim.client.request(method, path, params={"name": "x"})
    assert_problem(resp, 401, "missing_token")
    assert resp.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_route_with_bad_token_is_401(sim: SimCloud, method: str, path: str) -> None:
    resp = sim.client.request(
        method, path, params={"name": "x"}, headers={"Authorization": "Bearer clt_not-a-real-token"}
    )
    assert_problem(resp, 401, "invalid_token")


def test_events_websocket_without_token_is_closed_4401(sim: SimCloud) -> None:
    with pytest.raises(WebSocketDisconnect) as info, sim.client.websocket_connect("/api/v1/events"):
        pass
    assert info.value.code == 4401


def test_events_websocket_with_bad_token_is_closed_4401(sim: SimCloud) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as info,
        sim.client.websocket_connect("/api/v1/events", headers={"Authorization": "Bearer clt_wrong"}),
    ):
        pass
    assert info.value.code == 4401


def test_valid_token_is_accepted(sim: SimCloud) -> None:
    resp = sim.get("/api/v1/info")
    assert resp.status_code == 200
    assert resp.json()["drivers"][0]["name"] == "sim"


@pytest.mark.parametrize("kind", ["instance", "image", "network", "operation"])
def test_unknown_resource_is_404_with_its_code(sim: SimCloud, kind: str) -> None:
    for ref in ("nosuch", str(uuid.uuid4())):
        if kind == "operation" and ref == "nosuch":
            continue
        body = assert_problem(sim.get(f"/api/v1/{kind}s/{ref}"), 404, f"{kind}_not_found")
        assert ref in body["detail"]
        assert body["instance"] == f"/api/v1/{kind}s/{ref}"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/instances/nosuch/actions/start"),
        ("POST", "/api/v1/instances/nosuch/actions/stop"),
        ("DELETE", "/api/v1/instances/nosuch"),
        ("DELETE", "/api/v1/images/nosuch"),
        ("DELETE", "/api/v1/networks/nosuch"),
    ],
)
def test_actions_on_unknown_resources_are_404(sim: SimCloud, method: str, path: str) -> None:
    resp = sim.client.request(method, path, headers=sim.headers)
    kind = path.split("/")[3].rstrip("s")
    assert_problem(resp, 404, f"{kind}_not_found")


def test_unknown_action_is_422_validation_error(sim: SimCloud) -> None:
    body = assert_problem(sim.post("/api/v1/instances/web1/actions/explode"), 422, "validation_error")
    assert body["errors"][0]["loc"] == ["path", "action"]


def test_malformed_json_is_422_problem(sim: SimCloud) -> None:
    headers = {**sim.headers, "Content-Type": "application/json"}
    resp = sim.client.post("/api/v1/instances", content=b"{not json", headers=headers)
    assert_problem(resp, 422, "validation_error")


def test_unknown_path_is_404_problem(sim: SimCloud) -> None:
    assert_problem(sim.get("/api/v1/nothing-here"), 404, "not_found")


def test_wrong_method_is_405_problem(sim: SimCloud) -> None:
    assert_problem(sim.client.put("/api/v1/instances", headers=sim.headers), 405, "method_not_allowed")
