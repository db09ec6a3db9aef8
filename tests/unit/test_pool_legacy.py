"""The replaced reservation system's API for token holders, under /api/v1/pools/{pool}/legacy/, on
the simulated drivers: the listener's routes and answers (one implementation), here only on pools
with ``legacy_api``, with the caller's rights, HTTP statuses that fit, never for a cookie session
(the routes change things on GET), and never across workspaces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cloudlet.db.models import AuditEntry
from cloudlet.db.session import transaction
from cloudlet.services import users
from tests.helpers import eventually
from tests.unit.conftest import SimCloud

LEGACY = "/api/v1/pools/lab/legacy"
MAX_REACHED = "Error: Maximum VM Count reached"
NO_VM = "No VMs currently available, please try after some time"
NO_SUCH_ID = "Could not find a vm with given unique ID"
NO_SUCH_VM = "Could not find a vm with given details"
PASSWORD = "correct horse battery"


@pytest.fixture
def quiet(sim: SimCloud) -> SimCloud:
    """``sim`` without its pool controller thread: the tests pass the controller themselves."""
    sim.cloud.pools.stop()
    return sim


@pytest.fixture
def make_pool(quiet: SimCloud, image: str) -> Callable[..., None]:
    def make(name: str = "lab", **fields: Any) -> None:
        body = {
            "name": name,
            "template": {"image": image, "memory": 64},
            "min_ready": 0,
            "max_size": 2,
            "on_checkin": "reuse",
            "legacy_api": True,
            **fields,
        }
        resp = quiet.post("/api/v1/pools", json=body)
        assert resp.status_code == 201, resp.text

    return make


def bearer(token: str, workspace: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **({"X-Cloudlet-Workspace": workspace} if workspace else {})}


def user(sim: SimCloud, name: str, role: str | None = None) -> str:
    """A new user's access token, made a member of the default workspace with ``role``."""
    with transaction(sim.cloud.db.sessions) as s:
        users.create_user(s, name, PASSWORD)
    if role:
        added = sim.post("/api/v1/workspaces/default/members", json={"username": name, "role": role})
        assert added.status_code == 201, added.text
    resp = sim.client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def ok(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"status", "data", "message"} and body["status"] == "success", body
    assert body["message"] is None
    return body["data"]  # type: ignore[no-any-return]


def refused(resp: httpx.Response, status: int, message: str | None = None) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"status", "data", "message"} and body["status"] == "error", body
    assert body["data"] is None
    if message is not None:
        assert body["message"] == message
    return str(body["message"])


def settle(sim: SimCloud, vm_id: str) -> None:
    def available() -> bool:
        sim.cloud.pools.reconcile()
        resp = sim.get(f"{LEGACY}/getVMStatus/", params={"unique_id": vm_id})
        return ok(resp) == {"vm_status": "available"}

    eventually(available, timeout=20, interval=0.05, what=f"VM {vm_id} available")


def test_the_legacy_api_is_off_by_default(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(legacy_api=False)
    off = "the legacy API is off for this pool"
    for route in ("getVM/", "createVM/", "checkoutVM/"):
        refused(quiet.get(f"{LEGACY}/{route}"), 404, off)
    assert quiet.get("/api/v1/pools/lab").json()["vms"] == []  # nothing was created
    refused(quiet.get("/api/v1/pools/nope/legacy/getVM/"), 404, "pool not found")


def test_the_listeners_routes_with_fitting_statuses(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(max_size=1)
    made = ok(quiet.get(f"{LEGACY}/createVM/"))
    assert made["vm_status"] == "creating" and made["ip"]
    refused(quiet.get(f"{LEGACY}/createVM/"), 409, MAX_REACHED)
    empty = quiet.get(f"{LEGACY}/checkoutVM/")
    refused(empty, 409, NO_VM)
    assert int(empty.headers["Retry-After"]) >= 1
    settle(quiet, made["vm_id"])
    ident = {"unique_id": made["vm_id"], "ip": made["ip"]}
    not_out = "You cannot check-in a VM that is in ' available ' State"
    refused(quiet.get(f"{LEGACY}/checkinVM/", params=ident), 409, not_out)
    got = ok(quiet.get(f"{LEGACY}/checkoutVM/"))
    assert got == {**made, "vm_status": "checked-out"}
    busy = "You cannot delete a VM that is in ' checked-out ' State"
    refused(quiet.get(f"{LEGACY}/deleteVM/", params=ident), 409, busy)
    refused(quiet.get(f"{LEGACY}/getVM/", params={"unique_id": "dummy-value"}), 404, NO_SUCH_ID)
    refused(quiet.get(f"{LEGACY}/checkinVM/", params={**ident, "ip": "10.9.9.9"}), 404, NO_SUCH_VM)
    # a member of the workspace who is not the holder (nor an admin) cannot give it back
    olga = bearer(user(quiet, "olga", "operator"))
    assert ok(quiet.client.get(f"{LEGACY}/getVM/", params=ident, headers=olga))["vm_status"] == "checked-out"
    refused(quiet.client.get(f"{LEGACY}/checkinVM/", params=ident, headers=olga), 403)
    assert ok(quiet.get(f"{LEGACY}/checkinVM/", params=ident)) == {**made, "vm_status": "available"}
    viewer = bearer(user(quiet, "vera", "viewer"))
    refused(quiet.client.get(f"{LEGACY}/deleteVM/", params=ident, headers=viewer), 403)
    assert ok(quiet.get(f"{LEGACY}/deleteVM/", params=ident)) == {**made, "vm_status": "deleted"}
    refused(quiet.get(f"{LEGACY}/getVMStatus/", params=ident), 404, NO_SUCH_ID)


def test_a_browser_session_is_refused(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    """A cookie rides along with another site's GET: these routes take a bearer token only."""
    make_pool()
    with transaction(quiet.cloud.db.sessions) as s:
        users.create_user(s, "webuser", PASSWORD, is_admin=True)
    web = TestClient(quiet.client.app)
    assert (
        web.post("/api/v1/auth/session", json={"username": "webuser", "password": PASSWORD}).status_code
        == 200
    )
    assert web.get("/api/v1/pools/lab").status_code == 200  # the session works elsewhere
    for route in ("createVM/", "checkoutVM/", "getVM/"):
        assert "Bearer" in refused(web.get(f"{LEGACY}/{route}"), 403)
    assert quiet.get("/api/v1/pools/lab").json()["vms"] == []


def test_changes_are_audited_with_the_caller(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(max_size=1)
    ok(quiet.get(f"{LEGACY}/createVM/"))
    refused(quiet.get(f"{LEGACY}/checkoutVM/"), 409)
    quiet.cloud.audit.flush()
    with quiet.cloud.db.reads() as s:
        rows = s.execute(
            select(AuditEntry.action, AuditEntry.principal, AuditEntry.status, AuditEntry.path)
            .where(AuditEntry.method == "GET")
            .order_by(AuditEntry.at)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("createVM", "admin", 200, f"{LEGACY}/createVM/"),
        ("checkoutVM", "admin", 409, f"{LEGACY}/checkoutVM/"),
    ]


def test_other_workspaces_and_strangers_get_nothing(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(max_size=1)
    vm = ok(quiet.get(f"{LEGACY}/createVM/"))
    settle(quiet, vm["vm_id"])
    ident = {"unique_id": vm["vm_id"], "ip": vm["ip"]}
    # strangers get the 401 problem+json of every /api/v1 route (test_api_auth_errors.py)
    anonymous = quiet.client.get(f"{LEGACY}/checkoutVM/")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "missing_token"
    assert anonymous.headers["WWW-Authenticate"] == "Bearer"
    mallory = user(quiet, "mallory")
    made = quiet.client.post("/api/v1/workspaces", json={"name": "team-m"}, headers=bearer(mallory))
    assert made.status_code == 201
    token = quiet.client.post(
        "/api/v1/tokens", json={"name": "m", "role": "owner", "workspace": "team-m"}, headers=bearer(mallory)
    )
    assert token.status_code == 201, token.text
    for who in (bearer(mallory, "team-m"), bearer(token.json()["token"])):
        for route in ("getVM/", "getVMStatus/", "checkoutVM/", "checkinVM/", "createVM/", "deleteVM/"):
            resp = quiet.client.get(f"{LEGACY}/{route}", params=ident, headers=who)
            refused(resp, 404, "pool not found")
            assert vm["vm_id"] not in resp.text and vm["ip"] not in resp.text
    # a member of no workspace at all is refused too
    assert quiet.client.get(f"{LEGACY}/getVM/", headers=bearer(mallory)).status_code in (403, 404)
    assert ok(quiet.get(f"{LEGACY}/getVM/", params=ident))["vm_status"] == "available"  # untouched
