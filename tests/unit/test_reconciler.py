"""The reconciler keeps the database true to the backend: events, resync, and start-up recovery."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlalchemy import select

from cloudlet.db.models import Instance, IPAllocation, Network, Operation, Workspace
from cloudlet.db.session import transaction
from cloudlet.drivers.base import DhcpHost, InstanceSpec, PowerState
from cloudlet.services.lifecycle import State
from cloudlet.services.networks import random_mac
from tests.helpers import eventually
from tests.unit.conftest import SimCloud

CreateVm = Callable[..., httpx.Response]
Footprint = Callable[[], dict[str, int]]


def state_of(sim: SimCloud, name: str) -> str:
    return sim.get(f"/api/v1/instances/{name}").json()["state"]  # type: ignore[no-any-return]


def test_guest_that_powers_itself_off_shows_stopped(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    sim.driver.stop(vm_id)  # e.g. `poweroff` inside the guest: the backend reports the change
    eventually(lambda: state_of(sim, "web1") == "stopped", timeout=5, interval=0.02, what="stopped state")
    assert sim.post("/api/v1/instances/web1/actions/start", params={"wait": 10}).json()["status"] == "succeeded"


def test_instance_removed_behind_cloudlets_back_becomes_error(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    sim.driver.delete(vm_id)
    sim.cloud.reconciler.resync()
    vm = sim.get("/api/v1/instances/web1").json()
    assert vm["state"] == "error"
    assert vm["error"] == "the backend lost this instance"
    # an instance in error can still be deleted, which frees its address
    assert sim.delete("/api/v1/instances/web1", params={"wait": 10}).json()["status"] == "succeeded"
    assert sim.get("/api/v1/networks/default").json()["addresses_used"] == 0


def test_crashed_guest_is_error_with_a_reason(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    sim.cloud.reconciler.apply(vm_id, PowerState.CRASHED)
    vm = sim.get("/api/v1/instances/web1").json()
    assert (vm["state"], vm["error"]) == ("error", "the guest crashed")


def test_events_do_not_touch_an_instance_an_operation_holds(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    with transaction(sim.cloud.db.sessions) as s:
        s.get(Instance, vm_id).locked_by = "some-operation"  # type: ignore[union-attr]
    sim.cloud.reconciler.apply(vm_id, PowerState.STOPPED)
    assert state_of(sim, "web1") == "running"


def test_recovery_rolls_back_a_create_the_dead_server_left_half_done(
    sim: SimCloud, image: str, footprint: Footprint
) -> None:
    """A crash during provisioning: row, address, DHCP entry and backend instance exist, the
    operation says running. Recovery must remove them all and fail the operation."""
    with transaction(sim.cloud.db.sessions) as s:
        ws = s.scalar(select(Workspace).where(Workspace.name == "default"))
        net = s.scalar(select(Network).where(Network.name == "default"))
        assert ws is not None and net is not None
        row = Instance(workspace_id=ws.id, name="half", state=State.PROVISIONING, hostname="half", network_id=net.id)
        s.add(row)
        s.flush()
        alloc = IPAllocation(network_id=net.id, address="10.47.0.2", mac=random_mac(), instance_id=row.id)
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


def test_recovery_removes_orphans_but_keeps_known_instances(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    orphan = "0f0f0f0f-0000-4000-8000-000000000000"
    sim.driver.create(InstanceSpec(orphan, "ghost", "ws", 1, 64, 1, sim.data_dir, "qcow2", "ghost"))
    backend = next(iter(sim.driver.networks))
    sim.driver.add_dhcp_host(backend, DhcpHost("52:54:00:ff:ff:ff", "10.47.0.200", "ghost"))

    counts = sim.cloud.reconciler.recover()

    assert (counts["orphans_removed"], counts["dhcp_removed"]) == (1, 1)
    assert set(sim.driver.instances) == {vm_id}
    assert [h.name for h in sim.driver.dhcp_hosts(backend)] == ["web1"]
    assert state_of(sim, "web1") == "running"


def test_recovery_recreates_a_lost_backend_network_with_its_reservations(
    sim: SimCloud, create_vm: CreateVm
) -> None:
    create_vm("web1")
    vm = sim.get("/api/v1/instances/web1").json()
    backend = next(iter(sim.driver.networks))
    sim.driver.delete_network(backend)  # e.g. the host rebooted and the network was not persistent

    sim.cloud.reconciler.recover()

    assert [(h.mac, h.ip) for h in sim.driver.dhcp_hosts(backend)] == [(vm["mac"], vm["ip"])]
