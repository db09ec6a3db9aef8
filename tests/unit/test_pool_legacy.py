"""The replaced reservation system's API on a pool (/api/v1/pools/{pool}/legacy/...), on the
simulated drivers: off by default, its envelope on every answer, its three states and messages."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from cloudlet.db.session import transaction
from cloudlet.services import users
from tests.helpers import eventually
from tests.unit.conftest import SimCloud

LEGACY = "/api/v1/pools/lab/legacy"
NO_VM = "No VMs currently available, please try after some time"
NOT_FOUND = "Could not find a vm with given details"
PASSWORD = "correct horse battery"


@pytest.fixture
def quiet(sim: SimCloud) -> SimCloud:
    """``sim`` without its pool controller thread: the tests run the controller themselves, so a
    VM's state changes only when they say."""
    sim.cloud.pools.stop()
    return sim


@pytest.fixture
def make_pool(quiet: SimCloud, image: str) -> Callable[..., None]:
    def make(name: str = "lab", template: dict[str, Any] | None = None, **fields: Any) -> None:
        body = {
            "name": name,
            "template": {"image": image, "memory": 64, **(template or {})},
            "min_ready": 1,
            "max_size": 2,
            "legacy_api": True,
            **fields,
        }
        resp = quiet.post("/api/v1/pools", json=body)
        assert resp.status_code == 201, resp.text

    return make


def settle(sim: SimCloud, available: int) -> list[dict[str, Any]]:
    """Run the controller until the pool has ``available`` available VMs; its VMs then."""

    def ready() -> list[dict[str, Any]]:
        sim.cloud.pools.reconcile()
        vms: list[dict[str, Any]] = sim.get(f"{LEGACY}/vms").json()["data"]["vms"]
        return vms if sum(v["status"] == "available" for v in vms) == available else []

    return eventually(ready, timeout=20, interval=0.1, what=f"{available} available VMs")


@contextmanager
def controller(sim: SimCloud) -> Iterator[None]:
    """The pool controller, passing often, while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.05):
            sim.cloud.pools.reconcile()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


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


def success(resp: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"status", "data", "message"} and body["status"] == "success", body
    return body["data"]  # type: ignore[no-any-return]


def error(resp: httpx.Response, status: int, message: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"status", "data", "message"} and body["status"] == "error", body
    assert resp.headers["content-type"] == "application/json"
    if message is not None:
        assert body["message"] == message
    return body["data"]  # type: ignore[no-any-return]


def test_the_legacy_api_is_off_by_default(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(legacy_api=False)
    off = "the legacy API is off for this pool"
    assert error(quiet.get(f"{LEGACY}/vms"), 404, off) == {"code": "legacy_api_off"}
    error(quiet.post(f"{LEGACY}/checkout"), 404, off)
    error(quiet.post(f"{LEGACY}/vms"), 404, off)
    assert quiet.get("/api/v1/pools/lab").json()["vms"] == []  # nothing was created
    unknown = error(quiet.get("/api/v1/pools/nope/legacy/vms"), 404)
    assert unknown["code"] == "pool_not_found"


def test_create_get_status_and_the_maximum(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(min_ready=0, max_size=2)
    made = success(quiet.post(f"{LEGACY}/vms"), 201)
    # still booting: nobody can have it, so the old API calls it checked-out
    assert made["status"] == "checked-out" and made["state"] == "provisioning" and made["holder"] is None
    status = success(quiet.get(f"{LEGACY}/vms/{made['vm_id']}/status"))
    assert status == {"vm_id": made["vm_id"], "status": "checked-out", "state": "provisioning"}
    with controller(quiet):
        ready = success(quiet.post(f"{LEGACY}/vms", params={"wait": 20}), 201)
    assert ready["status"] == ready["state"] == "available" and ready["ip"] and ready["name"]
    assert success(quiet.get(f"{LEGACY}/vms/{ready['vm_id']}")) == ready
    over = error(quiet.post(f"{LEGACY}/vms", json={"wait": 5}), 409, "Maximum VM Count reached")
    assert over == {"code": "max_vms_reached", "max_size": 2}
    listed = success(quiet.get(f"{LEGACY}/vms"))["vms"]
    assert sorted(v["vm_id"] for v in listed) == sorted([made["vm_id"], ready["vm_id"]])
    error(quiet.get(f"{LEGACY}/vms/not-a-vm"), 404, NOT_FOUND)
    error(quiet.get(f"{LEGACY}/vms/not-a-vm/status"), 404, NOT_FOUND)


def test_checkout_the_last_vm_then_none_is_left(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(min_ready=1, max_size=1, template={"ssh_user": "lab"})
    [vm] = settle(quiet, 1)
    got = success(quiet.post(f"{LEGACY}/checkout"))
    assert got["vm_id"] == vm["vm_id"] and got["ip"] == vm["ip"] and got["name"] == vm["name"]
    assert got["status"] == "checked-out" and got["ssh_user"] == "lab" and got["lease_expires_at"]
    assert got["holder"] == "admin"
    empty = quiet.post(f"{LEGACY}/checkout")
    assert error(empty, 409, NO_VM)["code"] == "pool_exhausted"
    assert int(empty.headers["Retry-After"]) >= 1
    shown = success(quiet.get(f"{LEGACY}/vms/{vm['vm_id']}"))
    assert shown["status"] == shown["state"] == "checked-out" and shown["holder"] == "admin"


def test_checkin_by_the_holder_with_reuse(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(min_ready=1, max_size=1, on_checkin="reuse")
    settle(quiet, 1)
    got = success(quiet.post(f"{LEGACY}/checkout"))
    mismatch = {"vm_id": got["vm_id"], "ip": "10.9.9.9"}
    error(quiet.post(f"{LEGACY}/checkin", json=mismatch), 404, NOT_FOUND)
    # another member of the workspace is not the holder
    olga = bearer(user(quiet, "olga", "operator"))
    ident = {"vm_id": got["vm_id"], "ip": got["ip"]}
    assert error(quiet.client.post(f"{LEGACY}/checkin", json=ident, headers=olga), 403)
    back = quiet.post(f"{LEGACY}/checkin", json=ident)
    assert success(back)["status"] == "available" and back.json()["message"] == "VM checked in"
    assert success(back)["holder"] is None and success(back)["lease_expires_at"] is None
    error(quiet.post(f"{LEGACY}/checkin", json=ident), 409, "this VM is available, not checked out")
    assert success(quiet.post(f"{LEGACY}/checkout"))["vm_id"] == got["vm_id"]


def test_checkin_with_reset_shows_the_vm_going(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(min_ready=1, max_size=1)
    settle(quiet, 1)
    got = success(quiet.post(f"{LEGACY}/checkout"))
    back = success(quiet.post(f"{LEGACY}/checkin", json={"vm_id": got["vm_id"], "ip": got["ip"]}))
    assert back["vm_id"] == got["vm_id"] and back["status"] == "checked-out" and back["state"] == "resetting"
    [fresh] = settle(quiet, 1)
    assert fresh["vm_id"] != got["vm_id"]


def test_delete_needs_a_matching_id_and_ip(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(min_ready=2, max_size=2)
    first, second = settle(quiet, 2)
    held = success(quiet.post(f"{LEGACY}/checkout"))
    free = second if held["vm_id"] == first["vm_id"] else first
    busy = quiet.delete(f"{LEGACY}/vms", params={"vm_id": held["vm_id"], "ip": held["ip"]})
    assert error(busy, 409, "this VM is checked-out: only available or failed VMs are deleted") == {
        "code": "vm_busy"
    }
    crossed = {"vm_id": free["vm_id"], "ip": held["ip"]}  # two real VMs, but not the same one
    error(quiet.delete(f"{LEGACY}/vms", params=crossed), 404, NOT_FOUND)
    missing = quiet.delete(f"{LEGACY}/vms", params={"vm_id": free["vm_id"]})
    assert error(missing, 422)["code"] == "validation_error"
    ident = {"vm_id": free["vm_id"], "ip": free["ip"]}
    gone = quiet.client.request("DELETE", f"{LEGACY}/vms", json=ident, headers=quiet.headers)
    assert success(gone) == ident and gone.json()["message"] == "VM deleted"
    after = success(quiet.get(f"{LEGACY}/vms/{free['vm_id']}/status"))
    assert after["status"] == "checked-out" and after["state"] == "resetting"
    eventually(  # the delete runs on as an operation
        lambda: quiet.get(f"/api/v1/instances/{free['vm_id']}").status_code == 404,
        timeout=10,
        interval=0.05,
        what="the VM's delete operation",
    )


def test_bad_requests_get_the_envelope(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(min_ready=0)
    bad = error(quiet.post(f"{LEGACY}/checkin", json={"vm_id": "x"}), 422)
    assert bad["code"] == "validation_error" and bad["errors"][0]["loc"] == ["body", "ip"]
    error(quiet.post(f"{LEGACY}/vms", params={"wait": 9999}), 422)
    error(quiet.post(f"{LEGACY}/vms", json={"wait": -1}), 422)
    junk = quiet.client.post(
        f"{LEGACY}/checkin", content=b"{nope", headers={**quiet.headers, "Content-Type": "application/json"}
    )
    error(junk, 422)
    error(quiet.post(f"{LEGACY}/checkout", json={"lease": 5}), 422)
    assert quiet.get("/api/v1/pools/lab").json()["vms"] == []


def test_other_workspaces_and_strangers_get_nothing(quiet: SimCloud, make_pool: Callable[..., None]) -> None:
    make_pool(min_ready=1, max_size=1)
    [vm] = settle(quiet, 1)
    # strangers get the 401 problem+json of every /api/v1 route (test_api_auth_errors.py)
    for anonymous in (quiet.client.get(f"{LEGACY}/vms"), quiet.client.post(f"{LEGACY}/checkout")):
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
        for method, path, body in [
            ("GET", f"{LEGACY}/vms", None),
            ("GET", f"{LEGACY}/vms/{vm['vm_id']}", None),
            ("POST", f"{LEGACY}/checkout", None),
            ("POST", f"{LEGACY}/checkin", {"vm_id": vm["vm_id"], "ip": vm["ip"]}),
            ("POST", f"{LEGACY}/vms", None),
            ("DELETE", f"{LEGACY}/vms", {"vm_id": vm["vm_id"], "ip": vm["ip"]}),
        ]:
            resp = quiet.client.request(method, path, json=body, headers=who)
            assert error(resp, 404, "pool not found")["code"] == "pool_not_found"
            assert vm["vm_id"] not in resp.text and vm["ip"] not in resp.text
    # a member of no workspace at all is refused too
    refused = quiet.client.get(f"{LEGACY}/vms", headers=bearer(mallory))
    assert refused.status_code in (403, 404) and refused.json()["status"] == "error"
    assert settle(quiet, 1) == [vm]  # still there, still available, nobody holds it
