"""Browser sessions: HttpOnly, SameSite cookies (Secure over TLS), a double-submit CSRF token for
every change, and cookie websockets only from the server's own pages."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cloudlet.db.session import transaction
from cloudlet.services import users
from tests.unit.conftest import SimCloud, sim_cloud

PASSWORD = "a long enough password"


def browser(sim: SimCloud, base_url: str = "http://testserver") -> TestClient:
    with transaction(sim.cloud.db.sessions) as s:
        if s.scalar(users.select(users.User).where(users.User.username == "webuser")) is None:
            users.create_user(s, "webuser", PASSWORD, is_admin=True)
    return TestClient(sim.client.app, base_url=base_url)


def test_cookies_carry_the_session_and_changes_need_the_csrf_header(sim: SimCloud) -> None:
    web = browser(sim)
    resp = web.post("/api/v1/auth/session", json={"username": "webuser", "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert "access_token" not in body and "refresh_token" not in body
    cookies = resp.headers.get_list("set-cookie")
    access = next(c for c in cookies if c.startswith("cloudlet_access="))
    csrf = next(c for c in cookies if c.startswith("cloudlet_csrf="))
    assert "HttpOnly" in access and "SameSite=strict" in access and "Secure" not in access
    assert "HttpOnly" not in csrf and body["csrf_token"] in csrf

    assert web.get("/api/v1/instances").status_code == 200
    refused = web.post("/api/v1/networks", json={"name": "n1", "cidr": "10.91.0.0/24"})
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"
    forged = web.post(
        "/api/v1/networks", json={"name": "n1", "cidr": "10.91.0.0/24"}, headers={"X-CSRF-Token": "guess"}
    )
    assert forged.status_code == 403
    ok = web.post(
        "/api/v1/networks",
        json={"name": "n1", "cidr": "10.91.0.0/24"},
        headers={"X-CSRF-Token": body["csrf_token"]},
    )
    assert ok.status_code in (200, 202), ok.text  # 200 when the operation already ended

    renewed = web.post("/api/v1/auth/session/refresh", headers={"X-CSRF-Token": body["csrf_token"]})
    assert renewed.status_code == 200
    token = renewed.json()["csrf_token"]
    assert web.delete("/api/v1/auth/session", headers={"X-CSRF-Token": token}).status_code == 204
    assert web.get("/api/v1/instances").status_code == 401


def test_cookies_are_secure_over_tls(sim: SimCloud) -> None:
    web = browser(sim, "https://testserver")
    resp = web.post("/api/v1/auth/session", json={"username": "webuser", "password": PASSWORD})
    assert all("Secure" in c for c in resp.headers.get_list("set-cookie"))


def test_cookie_websockets_only_from_own_origin(tmp_path: Path) -> None:
    with sim_cloud(tmp_path) as sim:
        web = browser(sim)
        web.post("/api/v1/auth/session", json={"username": "webuser", "password": PASSWORD})
        with web.websocket_connect("/api/v1/events", headers={"Origin": "http://testserver"}):
            pass
        with (
            pytest.raises(WebSocketDisconnect) as info,
            web.websocket_connect("/api/v1/events", headers={"Origin": "https://evil.example"}),
        ):
            pass
        assert info.value.code == 4403


def test_the_session_state_answers_without_a_401(sim: SimCloud) -> None:
    web = browser(sim)
    assert web.get("/api/v1/auth/session").json() == {"active": False, "refreshable": False}
    body = web.post("/api/v1/auth/session", json={"username": "webuser", "password": PASSWORD}).json()
    assert web.get("/api/v1/auth/session").json() == {"active": True, "refreshable": True}
    web.cookies.set("cloudlet_access", "not-a-token")
    state = web.get("/api/v1/auth/session")
    assert state.status_code == 200 and state.json() == {"active": False, "refreshable": True}
    assert web.delete("/api/v1/auth/session", headers={"X-CSRF-Token": body["csrf_token"]}).status_code == 204
    assert web.get("/api/v1/auth/session").json() == {"active": False, "refreshable": False}


def test_a_handed_token_pair_becomes_a_cookie_session_once(sim: SimCloud) -> None:
    browser(sim)
    api = TestClient(sim.client.app)
    pair = api.post("/api/v1/auth/login", json={"username": "webuser", "password": PASSWORD}).json()
    web = TestClient(sim.client.app)
    adopted = web.post("/api/v1/auth/session/adopt", json={"refresh_token": pair["refresh_token"]})
    assert adopted.status_code == 200 and adopted.json()["username"] == "webuser"
    assert "access_token" not in adopted.json()
    assert web.get("/api/v1/auth/me").json()["username"] == "webuser"
    again = TestClient(sim.client.app).post(
        "/api/v1/auth/session/adopt", json={"refresh_token": pair["refresh_token"]}
    )
    assert again.status_code == 401  # spent: the pair from the address bar is worthless now
