"""The reconciler keeps the database true to the backend: events, resync, and start-up recovery."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from cloudlet.db.models import Instance, IPAllocation, Network, Operation, Runner, Workspace, utcnow
from cloudlet.db.session import transaction
from cloudlet.drivers.base import DhcpHost, InstanceSpec, PowerState
from cloudlet.services.lifecycle import State
from cloudlet.services.networks import mac_for
from tests.helpers import eventually
from tests.unit.conftest import SimCloud

CreateVm = Callable[..., httpx.Response]
Footprint = Callable[[], dict[str, int]]


def state_of(sim: SimCloud, name: str) -> str:
    return sim.get(f"/api/v1/instances/{name}").json()["state"]


@pytest.fixture
def by_hand(sim: SimCloud) -> SimCloud:
    """``sim`` with the reconciler's background threads stopped, for tests that drive it by hand
    (a backend event still queued from an earlier step would otherwise race with the test)."""
    sim.cloud.reconciler.stop()
    for thread in sim.cloud.reconciler._threads:
        thread.join(5)
        assert not thread.is_alive()
    return sim


def test_a_late_backend_event_does_not_undo_a_newer_state(sim: SimCloud, create_vm: CreateVm) -> None:
    """Backend events are queued and applied later. A report that is no longer true when it is
    applied (here: 'running', from before the user stopped the VM) must not overwrite the state."""
    web1 = create_vm("web1").json()["target_id"]
    web2 = create_vm("web2").json()["target_id"]
    assert (
        sim.post("/api/v1/instances/web1/actions/stop", params={"wait": 10}).json()["status"] == "succeeded"
    )
    assert sim.driver.instances[web1] == "stopped"

    sim.cloud.reconciler.on_backend_event(
        "vm", web1, PowerState.RUNNING
    )  # reported before the stop, delivered late
    sim.driver.stop(web2)  # a real change, reported through the same queue after the late one
    eventually(lambda: state_of(sim, "web2") == "stopped", timeout=5, interval=0.02, what="web2 stopped")

    assert state_of(sim, "web1") == "stopped", "a stale event made a stopped VM look running"


def test_guest_that_powers_itself_off_shows_stopped(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    sim.driver.stop(vm_id)  # e.g. `poweroff` inside the guest: the backend reports the change
    eventually(lambda: state_of(sim, "web1") == "stopped", timeout=5, interval=0.02, what="stopped state")
    assert (
        sim.post("/api/v1/instances/web1/actions/start", params={"wait": 10}).json()["status"] == "succeeded"
    )


def test_instance_removed_behind_cloudlets_back_becomes_error(by_hand: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    by_hand.driver.delete(vm_id)
    by_hand.cloud.reconciler.resync()
    vm = by_hand.get("/api/v1/instances/web1").json()
    assert vm["state"] == "error"
    assert vm["error"] == "the backend lost this instance"
    # an instance in error can still be deleted, which frees its address
    assert by_hand.delete("/api/v1/instances/web1", params={"wait": 10}).json()["status"] == "succeeded"
    assert by_hand.get("/api/v1/networks/default").json()["addresses_used"] == 0


def test_crashed_guest_is_error_with_a_reason(by_hand: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    by_hand.cloud.reconciler.apply(vm_id, PowerState.CRASHED)
    vm = by_hand.get("/api/v1/instances/web1").json()
    assert (vm["state"], vm["error"]) == ("error", "the guest crashed")


def test_events_do_not_touch_an_instance_an_operation_holds(by_hand: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    with transaction(by_hand.cloud.db.sessions) as s:
        s.execute(update(Instance).where(Instance.id == vm_id).values(locked_by="some-operation"))
    by_hand.cloud.reconciler.apply(vm_id, PowerState.STOPPED)
    assert state_of(by_hand, "web1") == "running"


def test_recovery_rolls_back_a_create_the_dead_server_left_half_done(
    sim: SimCloud, image: str, footprint: Footprint
) -> None:
    """A crash during provisioning: row, address, DHCP entry and backend instance exist, the
    operation says running. Recovery must remove them all and fail the operation."""
    with transaction(sim.cloud.db.sessions) as s:
        ws = s.scalar(select(Workspace).where(Workspace.name == "default"))
        net = s.scalar(select(Network).where(Network.name == "default"))
        assert ws is not None and net is not None
        row = Instance(
            workspace_id=ws.id, name="half", state=State.PROVISIONING, hostname="half", network_id=net.id
        )
        s.add(row)
        s.flush()
        alloc = IPAllocation(
            network_id=net.id, address="10.47.0.2", mac=mac_for("10.47.0.2"), instance_id=row.id
        )
        op = Operation(workspace_id=ws.id, kind="instance.create", target_type="instance", status="running")
        s.add_all([alloc, op])
        s.flush()
        backend, instance_id, op_id, mac = net.backend_name, row.id, op.id, alloc.mac
    sim.driver.add_dhcp_host(backend, DhcpHost(mac, "10.47.0.2", "half"))
    sim.driver.create(InstanceSpec(instance_id, "half", "ws", 1, 64, 1, sim.data_dir, "qcow2", "half"))

    counts = sim.cloud.reconciler.recover()

    assert counts["rolled_back"] == 1
    assert set(footprint().values()) == {0}
    op_now = sim.get(f"/api/v1/operations/{op_id}").json()
    assert op_now["status"] == "failed"
    assert op_now["error"]["code"] == "interrupted"


def test_recovery_removes_orphans_but_keeps_known_instances(by_hand: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    orphan = "0f0f0f0f-0000-4000-8000-000000000000"
    by_hand.driver.create(InstanceSpec(orphan, "ghost", "ws", 1, 64, 1, by_hand.data_dir, "qcow2", "ghost"))
    backend = next(iter(by_hand.driver.networks))
    by_hand.driver.add_dhcp_host(backend, DhcpHost("52:54:00:ff:ff:ff", "10.47.0.200", "ghost"))

    counts = by_hand.cloud.reconciler.recover()

    assert counts["orphans_removed"] == 1
    assert set(by_hand.driver.instances) == {vm_id}
    assert [h.name for h in by_hand.driver.dhcp_hosts(backend)] == ["web1"]
    assert state_of(by_hand, "web1") == "running"


def test_recovery_recreates_a_lost_backend_network_with_its_reservations(
    by_hand: SimCloud, create_vm: CreateVm
) -> None:
    create_vm("web1")
    vm = by_hand.get("/api/v1/instances/web1").json()
    backend = next(iter(by_hand.driver.networks))
    by_hand.driver.delete_network(backend)  # e.g. the host rebooted and the network was not persistent

    by_hand.cloud.reconciler.recover()

    assert [(h.mac, h.ip) for h in by_hand.driver.dhcp_hosts(backend)] == [(vm["mac"], vm["ip"])]


def test_recovery_settles_an_interrupted_stop(by_hand: SimCloud, create_vm: CreateVm) -> None:
    """A server killed during a graceful stop leaves the row 'stopping': after restart the
    instance shows what the backend says (here: still running), not 'stopping' forever."""
    vm_id = create_vm("web1").json()["target_id"]
    with transaction(by_hand.cloud.db.sessions) as s:
        row = s.get(Instance, vm_id)
        assert row is not None
        row.state = State.STOPPING
        row.locked_by = "0d0d0d0d-0000-4000-8000-000000000000"

    counts = by_hand.cloud.reconciler.recover()

    assert counts["settled"] == 1
    shown = by_hand.get("/api/v1/instances/web1").json()
    assert shown["state"] == "running"
    assert by_hand.post("/api/v1/instances/web1/actions/stop?wait=10").json()["status"] == "succeeded"


def test_recovery_leaves_a_live_replicas_operation_alone(by_hand: SimCloud, create_vm: CreateVm) -> None:
    """Two replicas on one database: when one starts, the other's operation in flight (its runner
    beats) is not failed and its instance not rolled back; a dead runner's operation is."""
    vm_id = create_vm("web1").json()["target_id"]
    other, gone = "11111111-0000-4000-8000-000000000000", "22222222-0000-4000-8000-000000000000"
    with transaction(by_hand.cloud.db.sessions) as s:
        row = s.get(Instance, vm_id)
        assert row is not None
        s.add(Runner(id=other, hostname="other", pid=1))
        s.add(Runner(id=gone, hostname="gone", pid=2, heartbeat_at=utcnow() - timedelta(hours=1)))
        live = Operation(
            workspace_id=row.workspace_id,
            kind="instance.stop",
            target_type="instance",
            target_id=vm_id,
            status="running",
            runner_id=other,
        )
        dead = Operation(
            workspace_id=row.workspace_id,
            kind="image.import",
            target_type="image",
            status="running",
            runner_id=gone,
        )
        s.add_all([live, dead])
        s.flush()
        row.state, row.locked_by = State.STOPPING, live.id
        live_id, dead_id = live.id, dead.id

    by_hand.cloud.reconciler.recover()

    assert by_hand.get(f"/api/v1/operations/{live_id}").json()["status"] == "running"
    assert by_hand.get(f"/api/v1/operations/{dead_id}").json()["status"] == "failed"
    assert by_hand.get("/api/v1/instances/web1").json()["state"] == "stopping"
