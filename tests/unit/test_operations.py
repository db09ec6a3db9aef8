"""Operations: failures roll back, transient errors are retried, operations can be awaited and listed."""

from __future__ import annotations

import threading
import time
import types
import uuid
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select

from cloudlet.db.models import Operation, Workspace
from cloudlet.errors import DriverError
from cloudlet.services import operations as operations_module
from cloudlet.services.context import RequestContext
from cloudlet.services.operations import OperationContext
from tests.unit.conftest import SimCloud

CreateVm = Callable[..., httpx.Response]
Footprint = Callable[[], dict[str, int]]


@pytest.fixture
def backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the retry delays of operations instead of sleeping them; jitter fixed at its middle."""
    delays: list[float] = []
    fake_time = types.SimpleNamespace(sleep=delays.append, monotonic=time.monotonic)
    monkeypatch.setattr(operations_module, "time", fake_time)
    monkeypatch.setattr(operations_module, "random", types.SimpleNamespace(random=lambda: 0.5))
    return delays


def test_failing_create_rolls_everything_back(
    sim: SimCloud, create_vm: CreateVm, footprint: Footprint
) -> None:
    sim.driver.fail_next["create"] = 1

    resp = create_vm("web1")

    assert resp.status_code == 200  # the operation is final, and failed
    op = resp.json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "driver_error"
    assert op["error"]["status"] == 502
    assert "simulated failure in create" in op["error"]["detail"]
    assert op["finished_at"] is not None
    assert sim.get("/api/v1/instances/web1").status_code == 404
    assert set(footprint().values()) == {0}
    assert all(not n.hosts for n in sim.driver.networks.values())


def test_name_and_address_are_reusable_after_a_failed_create(sim: SimCloud, create_vm: CreateVm) -> None:
    sim.driver.fail_next["create"] = 1
    assert create_vm("web1").json()["status"] == "failed"
    again = create_vm("web1")
    assert again.json()["status"] == "succeeded"
    assert sim.get("/api/v1/instances/web1").json()["ip"] == "10.47.0.2"


def test_transient_start_failure_is_retried(sim: SimCloud, create_vm: CreateVm, backoff: list[float]) -> None:
    sim.driver.fail_next["start"] = 2

    op = create_vm("web1").json()

    assert op["status"] == "succeeded", op
    assert sim.driver.fail_next["start"] == 0  # both failures were consumed
    assert sim.get("/api/v1/instances/web1").json()["state"] == "running"
    assert backoff == [0.5, 1.0]  # exponential backoff


def test_start_failing_every_attempt_fails_and_cleans_up(
    sim: SimCloud, create_vm: CreateVm, footprint: Footprint, backoff: list[float]
) -> None:
    sim.driver.fail_next["start"] = 10

    op = create_vm("web1").json()

    assert op["status"] == "failed"
    assert op["error"]["code"] == "driver_error"
    assert sim.driver.fail_next["start"] == 6  # four attempts, then it gave up
    assert backoff == [0.5, 1.0, 2.0]
    assert set(footprint().values()) == {0}  # the domain created before start is gone too


def test_failed_start_action_leaves_instance_stopped_and_unlocked(
    sim: SimCloud, create_vm: CreateVm, backoff: list[float]
) -> None:
    create_vm("web1")
    sim.post("/api/v1/instances/web1/actions/stop", params={"wait": 10})
    sim.driver.fail_next["start"] = 10

    op = sim.post("/api/v1/instances/web1/actions/start", params={"wait": 10}).json()

    assert op["status"] == "failed"
    assert sim.get("/api/v1/instances/web1").json()["state"] == "stopped"
    sim.driver.fail_next["start"] = 0
    retry = sim.post("/api/v1/instances/web1/actions/start", params={"wait": 10})
    assert retry.json()["status"] == "succeeded"  # not 409 instance_busy: the lock was released


def test_get_operation_with_wait_returns_the_final_operation(sim: SimCloud, image: str) -> None:
    started = sim.post("/api/v1/instances", json={"name": "web1", "image": image, "memory": 64}).json()

    resp = sim.get(f"/api/v1/operations/{started['id']}", params={"wait": 10})

    assert resp.status_code == 200
    op = resp.json()
    assert (op["id"], op["kind"], op["target_type"]) == (started["id"], "instance.create", "instance")
    assert (op["status"], op["progress"]) == ("succeeded", 100)
    assert op["started_at"] is not None and op["finished_at"] is not None
    assert op["created_at"] <= op["started_at"] <= op["finished_at"]
    assert op["result"]["instance_id"] == op["target_id"]


def test_get_operation_without_wait_does_not_block(sim: SimCloud, create_vm: CreateVm) -> None:
    op_id = create_vm("web1").json()["id"]
    began = time.monotonic()
    resp = sim.get(f"/api/v1/operations/{op_id}")
    assert resp.status_code == 200
    assert resp.json()["status"] == "succeeded"
    assert time.monotonic() - began < 1


def test_wait_gives_up_after_the_timeout_with_the_running_operation(sim: SimCloud) -> None:
    """A stuck operation: ?wait returns it as it is once the time is up."""
    release = threading.Event()

    def stuck(octx: OperationContext) -> None:
        release.wait(10)

    with sim.cloud.db.sessions() as s, s.begin():
        workspace_id = s.scalar(select(Workspace.id).where(Workspace.name == "default"))
        assert workspace_id is not None
        op = sim.cloud.ops.record(s, RequestContext("test", workspace_id), "test.stuck", "test", None)
    sim.cloud.ops.launch(op, stuck)
    try:
        began = time.monotonic()
        resp = sim.get(f"/api/v1/operations/{op.id}", params={"wait": 0.3})
        assert time.monotonic() - began >= 0.3
        assert resp.status_code == 200
        assert resp.json()["status"] in ("pending", "running")
    finally:
        release.set()
    assert sim.get(f"/api/v1/operations/{op.id}", params={"wait": 10}).json()["status"] == "succeeded"


def test_unknown_operation_is_404(sim: SimCloud) -> None:
    resp = sim.get(f"/api/v1/operations/{uuid.uuid4()}", params={"wait": 1})
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"


def test_operations_list_newest_first_with_filters(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web1")
    sim.driver.fail_next["create"] = 1
    failed_id = create_vm("web2").json()["id"]
    stop_id = sim.post("/api/v1/instances/web1/actions/stop", params={"wait": 10}).json()["id"]

    page = sim.get("/api/v1/operations").json()
    kinds = [o["kind"] for o in page["items"]]
    assert kinds == ["instance.stop", "instance.create", "instance.create", "image.import"]
    assert page["total"] == 4
    assert page["items"][0]["id"] == stop_id

    failed = sim.get("/api/v1/operations", params={"status": "failed"}).json()
    assert [o["id"] for o in failed["items"]] == [failed_id] and failed["total"] == 1

    second = sim.get("/api/v1/operations", params={"limit": 1, "offset": 1}).json()
    assert [o["id"] for o in second["items"]] == [failed_id]
    assert (second["total"], second["limit"], second["offset"]) == (4, 1, 1)

    bad = sim.get("/api/v1/operations", params={"status": "exploded"})
    assert bad.status_code == 422


def test_failed_delete_can_be_retried(
    sim: SimCloud, create_vm: CreateVm, footprint: Footprint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend that refuses one delete must not leave the instance stuck where no action is allowed."""
    create_vm("web1")
    real_delete = sim.driver.delete
    calls: list[str] = []

    def flaky_delete(instance_id: str) -> None:
        calls.append(instance_id)
        if len(calls) == 1:
            raise DriverError("simulated failure in delete")
        real_delete(instance_id)

    monkeypatch.setattr(sim.driver, "delete", flaky_delete)

    first = sim.delete("/api/v1/instances/web1", params={"wait": 10, "force": True}).json()
    assert first["status"] == "failed"
    assert first["error"]["code"] == "driver_error"
    state = sim.get("/api/v1/instances/web1").json()["state"]
    assert state in ("running", "stopped", "error"), f"instance left {state!r}"

    retry = sim.delete("/api/v1/instances/web1", params={"wait": 10, "force": True})
    assert retry.status_code == 200, retry.json()
    assert retry.json()["status"] == "succeeded"
    assert set(footprint().values()) == {0}


def test_wait_returns_promptly_when_the_operation_ends_between_its_checks(
    sim: SimCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wait`` reads the operation, then sleeps on a condition until the next 'finished' signal. An
    operation that ends in between must still wake it at once, not after the 0.5 s poll interval.
    The window is made wide on purpose: the operation ends just before ``wait`` takes the condition."""
    release = threading.Event()
    finished_at: list[float] = []

    def step(octx: OperationContext) -> None:
        release.wait(10)

    def status(op_id: str) -> str:
        with sim.cloud.db.reads() as s:
            return s.scalar(select(Operation.status).where(Operation.id == op_id)) or ""

    class EndsJustBeforeTheWait:
        def __init__(self, real: threading.Condition) -> None:
            self.real = real

        def __enter__(self) -> bool:
            if not release.is_set():  # the waiter has seen the operation running
                release.set()
                while status(op.id) != "succeeded":
                    time.sleep(0.005)
                time.sleep(0.05)  # past the notify that follows the final update
                finished_at.append(time.monotonic())
            return self.real.__enter__()

        def __exit__(self, *exc: object) -> None:
            self.real.__exit__(*exc)

        def __getattr__(self, name: str) -> object:  # wait, wait_for, notify_all...
            return getattr(self.real, name)

    monkeypatch.setattr(sim.cloud.ops, "_finished", EndsJustBeforeTheWait(sim.cloud.ops._finished))
    with sim.cloud.db.sessions() as s, s.begin():
        workspace_id = s.scalar(select(Workspace.id).where(Workspace.name == "default"))
        assert workspace_id is not None
        ctx = RequestContext("test", workspace_id)
        op = sim.cloud.ops.record(s, ctx, "test.quick", "test", None)
    sim.cloud.ops.launch(op, step)

    final = sim.cloud.ops.wait(ctx, op.id, 5)

    late = time.monotonic() - finished_at[0]
    assert final.status == "succeeded"
    assert late < 0.25, f"wait noticed the end {late:.2f}s late"
