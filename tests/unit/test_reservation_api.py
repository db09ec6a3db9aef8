"""Issue 14, the replaced "Virtual Machine Reservation System" API on its own listener, on the
simulated drivers: its six GET routes, its envelope, states and messages word for word, HTTP 200
for every answer as the original gave, its guard, and the two races (parallel createVM against
the maximum, parallel checkoutVM against the ready VMs). The real listener on real VMs is tried
in tests/integration/test_reservation_api.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from cloudlet.compat.guard import UnsafeListener
from cloudlet.compat.reservation import create_reservation_app
from cloudlet.config import Settings
from cloudlet.db.models import AuditEntry
from tests.helpers import eventually
from tests.unit.conftest import SimCloud

BASE = "http://127.0.0.1:5000"
MAX_REACHED = "Error: Maximum VM Count reached"
NO_VM = "No VMs currently available, please try after some time"
NO_SUCH_ID = "Could not find a vm with given unique ID"
NO_SUCH_VM = "Could not find a vm with given details"
TOKEN = "a-reservation-token-for-tests"


def listener(sim: SimCloud, **settings: Any) -> TestClient:
    """A client of the reservation listener's app on ``sim``'s cloud, as curl on loopback."""
    main = FastAPI()
    main.state.cloud = sim.cloud
    values = {"reservation_listen": "127.0.0.1:5000", "reservation_pool": "lab", **settings}
    app = create_reservation_app(main, Settings(data_dir=sim.data_dir, **values))
    return TestClient(app, base_url=BASE, follow_redirects=False)


@pytest.fixture
def quiet(sim: SimCloud) -> SimCloud:
    """``sim`` without its controller thread: the tests pass it themselves."""
    sim.cloud.pools.stop()
    return sim


@pytest.fixture
def make_pool(quiet: SimCloud, image: str) -> Callable[..., None]:
    def make(name: str = "lab", **fields: Any) -> None:
        body = {
            "name": name,
            "template": {"image": image, "memory": 64},
            "min_ready": 0,
            "max_size": 3,
            "on_checkin": "reuse",
            **fields,
        }
        resp = quiet.post("/api/v1/pools", json=body)
        assert resp.status_code == 201, resp.text

    return make


@pytest.fixture
def rs(quiet: SimCloud) -> Iterator[TestClient]:
    with listener(quiet) as client:
        yield client


def envelope(resp: httpx.Response, status: str) -> dict[str, Any]:
    """The body, checked: HTTP 200, JSON once (not a JSON string, as the original's double
    encoding gave), exactly status/data/message."""
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = json.loads(resp.content)
    assert isinstance(body, dict) and set(body) == {"status", "data", "message"}, body
    assert body["status"] == status, body
    return body  # type: ignore[no-any-return]


def ok(resp: httpx.Response) -> dict[str, Any]:
    body = envelope(resp, "success")
    assert body["message"] is None
    return body["data"]  # type: ignore[no-any-return]


def refused(resp: httpx.Response, message: str) -> None:
    body = envelope(resp, "error")
    assert body["data"] is None and body["message"] == message, body


def settle(sim: SimCloud, rs: TestClient, vm_id: str) -> None:
    """Pass the controller until getVMStatus follows the VM to available."""

    def available() -> bool:
        sim.cloud.pools.reconcile()
        return ok(rs.get("/getVMStatus/", params={"unique_id": vm_id})) == {"vm_status": "available"}

    eventually(available, timeout=20, interval=0.05, what=f"VM {vm_id} available")


def test_the_original_commands_and_every_message(
    quiet: SimCloud, make_pool: Callable[..., None], rs: TestClient
) -> None:
    make_pool(max_size=2)
    made = ok(rs.get("/createVM/"))
    assert set(made) == {"vm_id", "ip", "vm_status"} and made["vm_status"] == "creating" and made["ip"]
    assert ok(rs.get(f"/getVMStatus/?unique_id={made['vm_id']}")) == {"vm_status": "creating"}
    assert ok(rs.get(f"/getVM/?unique_id={made['vm_id']}&ip")) == made  # the README's own "&ip"
    refused(rs.get("/checkoutVM/"), NO_VM)  # still booting: nobody can have it
    settle(quiet, rs, made["vm_id"])
    vm = {**made, "vm_status": "available"}
    assert ok(rs.get("/getVM/", params={"unique_id": made["vm_id"]})) == vm

    second = ok(rs.get("/createVM/"))
    refused(rs.get("/createVM/"), MAX_REACHED)
    ident = {"unique_id": vm["vm_id"], "ip": vm["ip"]}
    refused(rs.get("/checkinVM/", params=ident), "You cannot check-in a VM that is in ' available ' State")
    refused(rs.get("/deleteVM/", params=ident | {"ip": second["ip"]}), NO_SUCH_VM)  # not that VM's address
    refused(
        rs.get("/deleteVM/", params={"unique_id": second["vm_id"], "ip": second["ip"]}),
        "You cannot delete a VM that is in ' creating ' State",
    )

    got = ok(rs.get("/checkoutVM/"))
    assert got == {**vm, "vm_status": "checked-out"}
    refused(rs.get("/checkoutVM/"), NO_VM)
    assert ok(rs.get("/getVMStatus/", params={"unique_id": vm["vm_id"]})) == {"vm_status": "checked-out"}
    refused(rs.get("/deleteVM/", params=ident), "You cannot delete a VM that is in ' checked-out ' State")
    refused(rs.get("/checkinVM/", params={"unique_id": vm["vm_id"], "ip": "10.9.9.9"}), NO_SUCH_VM)
    refused(rs.get("/checkinVM/", params={"unique_id": vm["vm_id"]}), NO_SUCH_VM)
    refused(rs.get("/checkinVM/"), NO_SUCH_VM)
    assert ok(rs.get("/checkinVM/", params=ident)) == vm  # reuse: available again, as the original
    assert ok(rs.get("/checkoutVM/"))["vm_id"] == vm["vm_id"]
    assert ok(rs.get("/checkinVM/", params=ident)) == vm

    assert ok(rs.get("/deleteVM/", params=ident)) == {**vm, "vm_status": "deleted"}
    for route in ("/getVM/", "/getVMStatus/"):
        refused(rs.get(route, params={"unique_id": vm["vm_id"]}), NO_SUCH_ID)
        refused(rs.get(route, params={"unique_id": "dummy-value"}), NO_SUCH_ID)
        refused(rs.get(route), NO_SUCH_ID)
        refused(rs.get(route, params={"unique_id": "x" * 5000}), NO_SUCH_ID)
    refused(rs.get("/deleteVM/", params=ident), NO_SUCH_VM)
    refused(rs.get("/checkinVM/", params=ident), NO_SUCH_VM)
    # the deleted VM's place is free again once it is really gone (it counts until then)
    refused(rs.get("/createVM/"), MAX_REACHED)

    def place_freed() -> bool:
        quiet.cloud.pools.reconcile()
        return len(quiet.get("/api/v1/pools/lab").json()["vms"]) == 1

    eventually(place_freed, timeout=20, interval=0.05, what="the deleted VM to go")
    assert ok(rs.get("/createVM/"))["vm_status"] == "creating"


def test_a_pool_that_resets_answers_the_check_in_with_deleted(
    quiet: SimCloud, make_pool: Callable[..., None], rs: TestClient
) -> None:
    make_pool(max_size=1, on_checkin="reset")
    made = ok(rs.get("/createVM/"))
    settle(quiet, rs, made["vm_id"])
    got = ok(rs.get("/checkoutVM/"))
    back = ok(rs.get("/checkinVM/", params={"unique_id": got["vm_id"], "ip": got["ip"]}))
    assert back == {"vm_id": got["vm_id"], "ip": got["ip"], "vm_status": "deleted"}
    refused(rs.get("/getVM/", params={"unique_id": got["vm_id"]}), NO_SUCH_ID)


def test_unknown_routes_methods_and_hosts_get_the_envelope(
    quiet: SimCloud, make_pool: Callable[..., None], rs: TestClient
) -> None:
    make_pool()
    missing = rs.get("/listVMs/")
    assert missing.status_code == 404 and missing.json() == {
        "status": "error",
        "data": None,
        "message": "Not Found",
    }
    posted = rs.post("/createVM/")
    assert posted.status_code == 405 and posted.json()["status"] == "error"
    rebound = rs.get("/createVM/", headers={"host": "evil.example"})  # DNS rebinding
    assert (
        rebound.status_code == 403 and rebound.json()["status"] == "error" and rebound.json()["data"] is None
    )
    assert quiet.get("/api/v1/pools/lab").json()["vms"] == []  # none of them made a VM
    moved = rs.get("/createVM")  # as Flask, the route is the one with the slash
    assert moved.status_code in (307, 308) and moved.headers["location"].endswith("/createVM/")


def test_a_missing_pool_is_said_so(quiet: SimCloud) -> None:
    with listener(quiet, reservation_pool="nope") as rs:
        body = envelope(rs.get("/createVM/"), "error")
    assert body["data"] is None and "'nope' does not exist" in body["message"]


def test_the_listener_is_loopback_only_without_a_token(
    quiet: SimCloud, make_pool: Callable[..., None]
) -> None:
    with pytest.raises(UnsafeListener, match="reservation_token"):
        listener(quiet, reservation_listen="0.0.0.0:5000")
    with pytest.raises(UnsafeListener, match="reservation_pool"):
        listener(quiet, reservation_pool=None)
    make_pool()
    with listener(quiet, reservation_listen="0.0.0.0:5000", reservation_token=TOKEN) as rs:
        anonymous = rs.get("/getVM/")
        assert anonymous.status_code == 401 and anonymous.json()["status"] == "error"
        refused(rs.get("/getVM/", headers={"Authorization": f"Bearer {TOKEN}"}), NO_SUCH_ID)


def test_changes_are_audited(quiet: SimCloud, make_pool: Callable[..., None], rs: TestClient) -> None:
    make_pool(max_size=1)
    made = ok(rs.get("/createVM/"))
    refused(rs.get("/createVM/"), MAX_REACHED)
    ok(rs.get("/getVM/", params={"unique_id": made["vm_id"]}))  # reading is not audited
    quiet.cloud.audit.flush()
    with quiet.cloud.db.reads() as s:
        rows = s.execute(
            select(AuditEntry.action, AuditEntry.principal, AuditEntry.status, AuditEntry.source)
            .where(AuditEntry.method == "GET")
            .order_by(AuditEntry.at)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("createVM", "reservation", 200, "testclient"),
        ("createVM", "reservation", 409, "testclient"),
    ]


def rush(n: int, call: Callable[[], httpx.Response]) -> list[dict[str, Any]]:
    """``n`` threads call at the same moment; their envelopes."""
    barrier = threading.Barrier(n)
    bodies: list[dict[str, Any] | BaseException | None] = [None] * n

    def one(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            resp = call()
            assert resp.status_code == 200, resp.text
            bodies[i] = resp.json()
        except BaseException as exc:
            bodies[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    failed = [b for b in bodies if not isinstance(b, dict)]
    assert not failed, failed
    return bodies  # type: ignore[return-value]


def test_12_parallel_creates_against_3_then_64_parallel_checkouts(
    quiet: SimCloud, make_pool: Callable[..., None], rs: TestClient
) -> None:
    make_pool(max_size=3)
    created = rush(12, lambda: rs.get("/createVM/"))
    made = [b["data"] for b in created if b["status"] == "success"]
    assert len(made) == 3 and all(m["vm_status"] == "creating" for m in made), created
    assert [b["message"] for b in created if b["status"] == "error"] == [MAX_REACHED] * 9
    assert len(quiet.get("/api/v1/pools/lab").json()["vms"]) == 3
    for vm in made:
        settle(quiet, rs, vm["vm_id"])

    answers = rush(64, lambda: rs.get("/checkoutVM/"))
    won = [b["data"] for b in answers if b["status"] == "success"]
    assert len({w["vm_id"] for w in won}) == len(won) == 3 and len({w["ip"] for w in won}) == 3
    assert {w["vm_id"] for w in won} == {m["vm_id"] for m in made}
    assert [b for b in answers if b["status"] == "error"] == [
        {"status": "error", "data": None, "message": NO_VM}
    ] * 61
    assert quiet.get("/api/v1/pools/lab").json()["counts"] == {"checked-out": 3}


def test_a_vm_changed_meanwhile_is_refused_with_its_state_now(
    quiet: SimCloud, make_pool: Callable[..., None], rs: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two check-ins of one VM at once: the second finds it checked out, then loses the race in
    the service; its answer names the state the first one left."""
    from cloudlet.errors import Conflict

    make_pool(max_size=1)
    made = ok(rs.get("/createVM/"))
    settle(quiet, rs, made["vm_id"])
    ok(rs.get("/checkoutVM/"))
    checkin = quiet.cloud.pools.checkin

    def lose(*args: Any, **kwargs: Any) -> None:
        checkin(*args, **kwargs)  # the other caller's check-in, just before ours
        raise Conflict("this VM is available, not checked out", code="not_checked_out")

    monkeypatch.setattr(quiet.cloud.pools, "checkin", lose)
    ident = {"unique_id": made["vm_id"], "ip": made["ip"]}
    refused(rs.get("/checkinVM/", params=ident), "You cannot check-in a VM that is in ' available ' State")
