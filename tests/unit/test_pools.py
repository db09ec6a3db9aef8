"""Reservation pools on the simulated drivers: the controller, atomic checkouts, check-ins with
reset/reuse, leases and their expiry, and the admin limits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from cloudlet.db.models import Pool, PoolLease, PoolMember, utcnow
from cloudlet.db.session import Database, transaction
from cloudlet.services.context import RequestContext
from cloudlet.services.events import Event
from cloudlet.services.pools import PoolExhausted, Pools
from tests.helpers import eventually
from tests.unit.conftest import SimCloud


@pytest.fixture
def make_pool(sim: SimCloud, image: str) -> Callable[..., dict[str, Any]]:
    def make(name: str = "lab", **fields: Any) -> dict[str, Any]:
        body = {
            "name": name,
            "template": {"image": image, "memory": 64},
            "min_ready": 2,
            "max_size": 4,
            **fields,
        }
        resp = sim.post("/api/v1/pools", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()  # type: ignore[no-any-return]

    return make


def settle(sim: SimCloud, pool: str, available: int) -> dict[str, Any]:
    """Run the controller until the pool has ``available`` ready VMs."""

    def ready() -> dict[str, Any] | None:
        sim.cloud.pools.reconcile()
        got = sim.get(f"/api/v1/pools/{pool}").json()
        return got if got["counts"].get("available", 0) == available else None

    return eventually(ready, timeout=20, interval=0.1, what=f"{available} available VMs")  # type: ignore[no-any-return]


def test_the_pool_fills_to_min_ready_and_never_passes_max_size(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    make_pool(min_ready=2, max_size=3)
    pool = settle(sim, "lab", 2)
    assert len(pool["vms"]) == 2 and all(v["ip"] for v in pool["vms"])
    for _ in range(3):
        sim.cloud.pools.reconcile()
    assert len(sim.get("/api/v1/pools/lab").json()["vms"]) == 2
    assert sim.post("/api/v1/pools/lab/vms", json={"count": 1}).status_code == 201
    over = sim.post("/api/v1/pools/lab/vms", json={"count": 1})
    assert over.status_code == 409 and over.json()["detail"] == "Maximum VM Count reached"
    for _ in range(3):
        sim.cloud.pools.reconcile()
    assert len(sim.get("/api/v1/pools/lab").json()["vms"]) == 3


def test_checkout_and_checkin_with_reset(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    make_pool(min_ready=1, max_size=1)
    settle(sim, "lab", 1)
    got = sim.post("/api/v1/pools/lab/checkout").json()
    assert got["ip"] and got["ssh_user"] == "root" and got["lease_expires_at"]
    empty = sim.post("/api/v1/pools/lab/checkout")
    assert empty.status_code == 409 and empty.json()["code"] == "pool_exhausted"
    assert empty.json()["detail"] == "No VMs currently available, please try after some time"
    assert int(empty.headers["Retry-After"]) >= 1
    unknown = sim.post("/api/v1/pools/lab/checkin", json={"ip": "10.9.9.9"})
    assert unknown.status_code == 404 and unknown.json()["detail"] == "Could not find a vm with given details"
    assert sim.post("/api/v1/pools/lab/checkin", json={"ip": got["ip"]}).status_code == 204
    again = sim.post("/api/v1/pools/lab/checkin", json={"id": got["id"]})
    assert again.status_code == 409
    # reset: the returned VM is replaced by a fresh one before anyone can have it
    pool = settle(sim, "lab", 1)
    assert [v["instance_id"] for v in pool["vms"]] != [got["id"]]
    assert sim.get(f"/api/v1/instances/{got['id']}").status_code == 404
    history = sim.get("/api/v1/pools/lab/history").json()
    assert history[0]["instance_id"] == got["id"] and history[0]["end_reason"] == "returned"


def test_reuse_hands_out_the_same_vm_again(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    make_pool(min_ready=1, max_size=1, on_checkin="reuse")
    settle(sim, "lab", 1)
    first = sim.post("/api/v1/pools/lab/checkout").json()
    sim.post("/api/v1/pools/lab/checkin", json={"id": first["id"]})
    assert sim.post("/api/v1/pools/lab/checkout").json()["id"] == first["id"]


def test_64_parallel_checkouts_against_10_ready_vms(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    make_pool(min_ready=10, max_size=10)
    settle(sim, "lab", 10)
    with sim.cloud.db.reads() as s:
        from cloudlet.db.models import Workspace

        ws = s.scalar(select(Workspace.id).where(Workspace.name == "default"))
    from cloudlet.services.context import RequestContext

    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(64)

    def grab(i: int) -> None:
        ctx = RequestContext(principal=f"client{i}", workspace_id=str(ws))
        barrier.wait()
        try:
            got = sim.cloud.pools.checkout(ctx, "lab")
            outcome = got.instance_id
        except PoolExhausted:
            outcome = "exhausted"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    vms = [r for r in results if r != "exhausted"]
    assert len(vms) == 10 and len(set(vms)) == 10 and results.count("exhausted") == 54
    with sim.cloud.db.reads() as s:
        holders = s.execute(select(PoolMember.instance_id, PoolMember.holder)).all()
    assert sorted(i for i, _ in holders) == sorted(vms)


def test_leases_extend_expire_and_warn(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    make_pool(min_ready=1, max_size=1, on_checkin="reuse", lease_default=600, lease_max=1200)
    settle(sim, "lab", 1)
    got = sim.post("/api/v1/pools/lab/checkout", json={"lease": 300}).json()
    assert sim.post("/api/v1/pools/lab/checkout", json={"lease": 5000}).status_code == 422
    too_long = sim.post("/api/v1/pools/lab/extend", json={"id": got["id"], "seconds": 5000})
    assert too_long.status_code == 422
    assert sim.post("/api/v1/pools/lab/extend", json={"id": got["id"], "seconds": 900}).status_code == 200
    assert [x["instance_id"] for x in sim.get("/api/v1/leases").json()] == [got["id"]]
    with sim.client.websocket_connect("/api/v1/events", headers=sim.headers) as ws:
        with transaction(sim.cloud.db.sessions) as s:
            s.execute(update(PoolMember).values(lease_expires_at=utcnow() + timedelta(minutes=2)))
        sim.cloud.pools.reconcile()
        while (event := ws.receive_json())["type"] != "pool.lease_expiring":
            pass
        assert event["data"]["instance_id"] == got["id"] and event["data"]["pool"] == "lab"
    with transaction(sim.cloud.db.sessions) as s:
        s.execute(update(PoolMember).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    sim.cloud.pools.reconcile()
    pool = sim.get("/api/v1/pools/lab").json()
    assert pool["counts"] == {"available": 1}
    with sim.cloud.db.reads() as s:
        lease = s.scalar(select(PoolLease))
        assert lease is not None and lease.end_reason == "expired"
    assert sim.get("/api/v1/leases").json() == []


def test_only_available_or_failed_vms_are_removed(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    make_pool(min_ready=2, max_size=2)
    settle(sim, "lab", 2)
    got = sim.post("/api/v1/pools/lab/checkout").json()
    busy = sim.delete(f"/api/v1/pools/lab/vms/{got['id']}")
    assert busy.status_code == 409
    other = next(v for v in sim.get("/api/v1/pools/lab").json()["vms"] if v["instance_id"] != got["id"])
    assert sim.delete(f"/api/v1/pools/lab/vms/{other['instance_id']}").status_code == 204
    assert sim.delete("/api/v1/pools/lab").status_code == 409  # a VM is still checked out
    sim.post("/api/v1/pools/lab/checkin", json={"id": got["id"]})
    assert sim.delete("/api/v1/pools/lab").status_code == 204
    assert sim.get("/api/v1/pools/lab").status_code == 404


def test_a_waiter_leaving_early_does_not_block_the_line() -> None:
    from cloudlet.services.pools import _Line

    async def walk() -> None:
        line = _Line(asyncio.get_running_loop(), next_ticket=3)
        line.leave(1)  # gave up while ticket 0 was being served
        assert line.serving == 0
        line.leave(0)
        assert line.serving == 2  # ticket 1 is skipped: ticket 2 is next

    asyncio.run(walk())


def test_waiters_are_served_in_order_and_never_starve_checkins(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    """More waiters than the server has worker threads: a check-in still gets through at once, and
    the VM then passes down the line in arrival order (each waiter returns it when served)."""
    make_pool(min_ready=1, max_size=1, on_checkin="reuse")
    settle(sim, "lab", 1)
    first = sim.post("/api/v1/pools/lab/checkout").json()
    served: list[int] = []
    failures: list[str] = []

    def wait_in_line(i: int) -> None:
        got = sim.post("/api/v1/pools/lab/checkout", params={"wait": 30})
        if got.status_code != 200:
            failures.append(got.text)
            return
        served.append(i)
        sim.post("/api/v1/pools/lab/checkin", json={"id": got.json()["id"]})

    def in_line() -> int:
        lines = list(sim.cloud.pools._lines.values())
        return sum(line.next_ticket - line.serving for line in lines)

    waiters = 48  # FastAPI's thread pool has 40
    threads = [threading.Thread(target=wait_in_line, args=(i,)) for i in range(waiters)]
    for n, t in enumerate(threads, 1):
        t.start()  # each waiter takes its ticket before the next one comes: served[i] must be i
        eventually(lambda n=n: in_line() == n, timeout=20, interval=0.005, what=f"waiter {n} in line")
    started = time.monotonic()
    assert sim.post("/api/v1/pools/lab/checkin", json={"id": first["id"]}).status_code == 204
    assert time.monotonic() - started < 2, "the check-in waited for a worker thread"
    for t in threads:
        t.join(timeout=60)
    assert not failures and served == list(range(waiters))


def test_a_waiter_gives_up_with_pool_exhausted(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    make_pool(min_ready=1, max_size=1)
    settle(sim, "lab", 1)
    sim.post("/api/v1/pools/lab/checkout")
    started = time.monotonic()
    late = sim.post("/api/v1/pools/lab/checkout", params={"wait": 0.5})
    assert late.status_code == 409 and late.json()["code"] == "pool_exhausted"
    assert 0.5 <= time.monotonic() - started < 3


def test_a_vm_is_available_only_once_it_answers(sim: SimCloud, make_pool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    answering = {"now": False}
    monkeypatch.setattr(sim.cloud.compute, "reachable", lambda *a, **k: answering["now"])
    make_pool(min_ready=1, max_size=1)
    for _ in range(3):
        sim.cloud.pools.reconcile()
        time.sleep(0.1)
    pool = sim.get("/api/v1/pools/lab").json()
    assert pool["counts"] == {"provisioning": 1}, "a running VM that does not answer was handed out"
    assert sim.post("/api/v1/pools/lab/checkout").status_code == 409
    answering["now"] = True
    settle(sim, "lab", 1)


def test_the_tcp_probe() -> None:
    """Only an accepted connection counts."""
    import socket

    from cloudlet.drivers.sim import SimDriver

    probe = super(SimDriver, SimDriver()).reachable  # the base class's TCP probe
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert probe("x", "127.0.0.1", port, 1.0)
    assert not probe("x", "127.0.0.1", port, 1.0)  # nothing listens now


def test_one_replica_at_a_time_runs_the_controller(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    from cloudlet.services.leader import Leadership
    from cloudlet.services.pools import LEADER_LOCK, Pools

    sessions = sim.cloud.db.sessions
    sim.cloud.pools.stop()  # its thread would run passes of its own meanwhile; this test drives them
    sim.cloud.pools.reconcile()  # this server leads
    other = Leadership(sessions, "other-replica", ttl=2.0)
    assert not other.hold(LEADER_LOCK)
    second = Pools(sessions, sim.cloud.db.reads, sim.cloud.bus, sim.cloud.instances, leadership=other)
    make_pool(min_ready=2, max_size=2)
    second.reconcile()
    assert sim.get("/api/v1/pools/lab").json()["vms"] == [], "a follower's controller acted"
    assert sim.cloud.pools.leadership is not None
    sim.cloud.pools.leadership.release(LEADER_LOCK)  # the leader stops: the other takes over at once
    assert other.hold(LEADER_LOCK)
    second.reconcile()
    assert len(sim.get("/api/v1/pools/lab").json()["vms"]) == 2
    first = Leadership(sessions, "first", ttl=0.5)
    assert other.hold(LEADER_LOCK) and not first.hold(LEADER_LOCK)  # renewed just now: still held
    time.sleep(2.1)  # the other replica died: its lock lapses
    assert first.hold(LEADER_LOCK) and not other.hold(LEADER_LOCK)


def test_a_vm_becoming_ready_is_announced(sim: SimCloud, make_pool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Pages showing a pool hear when a VM is ready (the controller's change, not a request's)."""
    published: list[Event] = []
    publish = sim.cloud.bus.publish
    monkeypatch.setattr(sim.cloud.bus, "publish", lambda e: (published.append(e), publish(e)))
    make_pool(min_ready=1, max_size=1)
    pool = settle(sim, "lab", 1)
    vm_id = pool["vms"][0]["instance_id"]
    ready = [e.data for e in published if e.type == "pool.vm" and e.data["status"] == "available"]
    assert ready == [{"pool_id": pool["id"], "instance_id": vm_id, "status": "available"}]


def test_a_pool_is_changed_in_place(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    made = make_pool(min_ready=3, max_size=4)
    settle(sim, "lab", 3)
    body = {
        "name": "lab",
        "template": {**made["template"], "memory": 128},
        "min_ready": 1,
        "max_size": 1,
        "lease_default": 600,
        "lease_max": 7200,
        "on_checkin": "reuse",
    }
    resp = sim.put("/api/v1/pools/lab", json=body)
    assert resp.status_code == 200, resp.text
    changed = resp.json()
    assert (changed["min_ready"], changed["max_size"], changed["on_checkin"]) == (1, 1, "reuse")
    assert changed["template"]["memory"] == 128 and changed["lease_default"] == 600
    pool = settle(sim, "lab", 1)  # the two ready VMs above the new maximum are retired

    def shrunk() -> bool:
        sim.cloud.pools.reconcile()
        return len(sim.get("/api/v1/pools/lab").json()["vms"]) == 1

    eventually(shrunk, timeout=20, interval=0.1, what="the pool to shrink to its new maximum")
    assert len(pool["vms"]) >= 1
    bad = sim.put("/api/v1/pools/lab", json={**body, "min_ready": 5})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_pool"
    make_pool("other", min_ready=0, max_size=1)
    taken = sim.put("/api/v1/pools/lab", json={**body, "name": "other"})
    assert taken.status_code == 409
    assert sim.get("/api/v1/pools/lab").json()["min_ready"] == 1  # refusals changed nothing


def test_cli_pool_set_changes_only_what_is_given(  # type: ignore[no-untyped-def]
    sim: SimCloud, make_pool, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from cloudlet.cli import pools as pools_cli

    monkeypatch.setattr(pools_cli, "client", sim.cli_client)
    make_pool(min_ready=0, max_size=2, lease_default=900)
    out = CliRunner().invoke(pools_cli.app, ["set", "lab", "--max-size", "4", "--memory", "128"])
    assert out.exit_code == 0, out.output
    assert "0-4 x" in out.output and "128 MiB" in out.output
    pool = sim.get("/api/v1/pools/lab").json()
    assert (pool["max_size"], pool["template"]["memory"], pool["lease_default"]) == (4, 128, 900)
    bad = CliRunner().invoke(pools_cli.app, ["set", "lab", "--min-ready", "9"])
    assert bad.exit_code != 0 and "min_ready" in bad.output


def test_idle_vms_above_min_ready_are_retired(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    make_pool(min_ready=1, max_size=3, idle_timeout=60)
    settle(sim, "lab", 1)
    assert sim.post("/api/v1/pools/lab/vms", json={"count": 2}).status_code == 201
    settle(sim, "lab", 3)
    with transaction(sim.cloud.db.sessions) as s:  # all three waited unused for two minutes
        s.execute(update(PoolMember).values(idle_since=utcnow() - timedelta(seconds=120)))

    def down_to_min_ready() -> bool:
        sim.cloud.pools.reconcile()
        return len(sim.get("/api/v1/pools/lab").json()["vms"]) == 1

    eventually(down_to_min_ready, timeout=20, interval=0.1, what="the idle VMs to go")
    for _ in range(3):
        sim.cloud.pools.reconcile()
    assert sim.get("/api/v1/pools/lab").json()["counts"] == {"available": 1}  # min_ready stays


def _rush(n: int, call: Callable[[int], Any]) -> list[Any]:
    """``n`` threads call ``call(i)`` at the same moment; their results (or exceptions) in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def one(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = call(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_12_parallel_adds_against_a_maximum_of_3_make_exactly_3(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    """Issue 14: the count and the claim are one step in the database, so parallel adds never
    pass max_size (they used to make 12 VMs, tell 12 callers "created", then destroy 9)."""
    sim.cloud.pools.stop()  # no controller pass meanwhile: what the adds made is what stays
    make_pool(min_ready=0, max_size=3)
    answers = _rush(12, lambda _: sim.post("/api/v1/pools/lab/vms", json={"count": 1}))
    made = [a.json()["instance_ids"] for a in answers if a.status_code == 201]
    refused = [a.json() for a in answers if a.status_code == 409]
    assert len(made) == 3 and len(refused) == 9, [a.text for a in answers]
    assert all(r["code"] == "max_vms_reached" and r["detail"] == "Maximum VM Count reached" for r in refused)
    vms = sim.get("/api/v1/pools/lab").json()["vms"]
    assert sorted(v["instance_id"] for v in vms) == sorted(i for [i] in made)
    assert sim.get("/api/v1/instances").json()["total"] == 3
    eventually(lambda: len(sim.driver.instances) == 3, timeout=10, interval=0.05, what="3 VMs made")
    time.sleep(0.2)
    assert len(sim.driver.instances) == 3


def test_two_replicas_adding_at_once_never_pass_the_maximum(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    """Two services on two engines of one database (two replicas): SQLite's own write lock, not
    the process's writer queue, keeps the count-and-claim atomic between them."""
    sim.cloud.pools.stop()
    pool = make_pool(min_ready=0, max_size=4)
    other_db = Database(sim.cloud.db.url)
    try:
        other = Pools(other_db.sessions, other_db.reads, sim.cloud.bus, sim.cloud.instances)
        replicas = [sim.cloud.pools, other]
        with sim.cloud.db.reads() as s:
            ws = s.scalar(select(Pool.workspace_id).where(Pool.id == pool["id"]))
        ctx = RequestContext(principal="admin", workspace_id=str(ws))
        answers = _rush(16, lambda i: replicas[i % 2].add_vms(ctx, "lab", 1))
    finally:
        other_db.dispose()
    made = [a for a in answers if isinstance(a, list)]
    refused = [a for a in answers if not isinstance(a, list)]
    assert len(made) == 4 and all(getattr(r, "code", "") == "max_vms_reached" for r in refused), answers
    assert len(sim.get("/api/v1/pools/lab").json()["vms"]) == 4
    assert sim.get("/api/v1/instances").json()["total"] == 4


def test_a_vm_that_cannot_be_made_frees_its_place(sim: SimCloud, make_pool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from cloudlet.errors import InsufficientResources

    sim.cloud.pools.stop()
    make_pool(min_ready=0, max_size=2)

    def no_room(*_: Any, **__: Any) -> None:
        raise InsufficientResources("not enough host memory", code="insufficient_memory")

    with monkeypatch.context() as m:
        m.setattr(sim.cloud.instances, "create", no_room)
        refused = sim.post("/api/v1/pools/lab/vms", json={"count": 2})
    assert refused.status_code == 409 and refused.json()["code"] == "insufficient_memory"
    assert sim.get("/api/v1/pools/lab").json()["vms"] == []  # both places are free again
    assert sim.post("/api/v1/pools/lab/vms", json={"count": 2}).status_code == 201


def test_an_abandoned_claim_is_freed_after_its_grace(sim: SimCloud, make_pool) -> None:  # type: ignore[no-untyped-def]
    """A place claimed by a process that died before making its VM: the controller leaves it alone
    while a VM may still come, then frees it."""
    from cloudlet.services.pools import CLAIM_GRACE

    sim.cloud.pools.stop()
    made = make_pool(min_ready=0, max_size=1)
    with sim.cloud.db.reads() as s:
        pool = s.get(Pool, made["id"])
    assert pool is not None
    [claim] = sim.cloud.pools._claim(pool, 1)
    for _ in range(2):
        sim.cloud.pools.reconcile()
    assert sim.get("/api/v1/pools/lab").json()["counts"] == {"provisioning": 1}
    assert sim.post("/api/v1/pools/lab/vms", json={"count": 1}).status_code == 409
    with transaction(sim.cloud.db.sessions) as s:
        s.execute(update(PoolMember).values(created_at=utcnow() - CLAIM_GRACE - timedelta(seconds=1)))

    def freed() -> bool:
        sim.cloud.pools.reconcile()
        return sim.get("/api/v1/pools/lab").json()["vms"] == []

    eventually(freed, timeout=10, interval=0.05, what="the abandoned place to be freed")
    assert claim[0]
    assert sim.post("/api/v1/pools/lab/vms", json={"count": 1}).status_code == 201
