"""Networks and IP address management through the API: capacity, exhaustion, concurrency, conflicts."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloudlet.db.models import IPAllocation, Workspace
from cloudlet.errors import DriverError, Exhausted
from cloudlet.services.context import RequestContext
from cloudlet.services.instances import CreateRequest
from tests.unit.conftest import SimCloud

CreateVm = Callable[..., httpx.Response]


def make_network(sim: SimCloud, name: str, cidr: str, **extra: Any) -> httpx.Response:
    return sim.post("/api/v1/networks", params={"wait": 10}, json={"name": name, "cidr": cidr, **extra})


def network(sim: SimCloud, ref: str) -> dict[str, Any]:
    resp = sim.get(f"/api/v1/networks/{ref}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def ip_of(sim: SimCloud, name: str) -> str:
    return sim.get(f"/api/v1/instances/{name}").json()["ip"]


def test_default_network_exists_on_start(sim: SimCloud) -> None:
    net = network(sim, "default")
    assert (net["cidr"], net["gateway"], net["mode"], net["status"]) == (
        "10.47.0.0/24",
        "10.47.0.1",
        "nat",
        "active",
    )
    # 254 hosts less the gateway and the DHCP spare (the last host)
    assert (net["addresses_total"], net["addresses_used"]) == (252, 0)


def test_network_create_makes_the_backend_network(sim: SimCloud) -> None:
    resp = make_network(sim, "lab", "10.99.0.0/24", mode="isolated")
    assert resp.status_code == 200
    assert resp.json()["status"] == "succeeded"
    net = network(sim, "lab")
    assert (net["status"], net["mode"], net["gateway"]) == ("active", "isolated", "10.99.0.1")
    assert net["id"] == resp.json()["result"]["network_id"]
    backend = {n.spec.bridge: n.spec for n in sim.driver.networks.values()}
    assert backend[net["bridge"]].cidr == "10.99.0.0/24"
    assert backend[net["bridge"]].mode == "isolated"
    assert len(net["bridge"]) <= 15  # Linux interface names


def test_slash_29_gives_exactly_four_addresses(sim: SimCloud, create_vm: CreateVm) -> None:
    assert make_network(sim, "small", "10.99.0.0/29").json()["status"] == "succeeded"
    assert network(sim, "small")["addresses_total"] == 4

    for i in range(4):
        assert create_vm(f"vm{i}", network="small").json()["status"] == "succeeded"
    ips = [ip_of(sim, f"vm{i}") for i in range(4)]
    # .1 is the gateway and .6 (the last host) the DHCP server's spare for unknown clients
    assert sorted(ips, key=ipaddress.ip_address) == ["10.99.0.2", "10.99.0.3", "10.99.0.4", "10.99.0.5"]

    fifth = create_vm("vm4", network="small")
    assert fifth.status_code == 409
    assert fifth.json()["code"] == "network_exhausted"
    assert "10.99.0.0/29" in fifth.json()["detail"]
    assert sim.get("/api/v1/instances/vm4").status_code == 404
    assert network(sim, "small")["addresses_used"] == 4


def test_freed_address_is_given_again(sim: SimCloud, create_vm: CreateVm) -> None:
    make_network(sim, "small", "10.99.0.0/29")
    for i in range(4):
        create_vm(f"vm{i}", network="small")
    freed = ip_of(sim, "vm2")
    assert (
        sim.delete("/api/v1/instances/vm2", params={"wait": 10, "force": True}).json()["status"]
        == "succeeded"
    )
    assert network(sim, "small")["addresses_used"] == 3

    assert create_vm("vm9", network="small").json()["status"] == "succeeded"
    assert ip_of(sim, "vm9") == freed


def test_concurrent_creates_never_share_an_address_nor_overfill(sim: SimCloud, image: str) -> None:
    assert make_network(sim, "mid", "10.98.0.0/28").json()["status"] == "succeeded"
    capacity = network(sim, "mid")["addresses_total"]
    assert capacity == 12  # 14 hosts less gateway and spare
    start = threading.Barrier(20)

    def create(i: int) -> httpx.Response:
        start.wait()
        body = {"name": f"vm{i}", "image": image, "memory": 64, "network": "mid"}
        return sim.post("/api/v1/instances", params={"wait": 20}, json=body)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(create, range(20)))

    created = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code != 200]
    assert all(r.json()["status"] == "succeeded" for r in created), [r.json() for r in created]
    assert {(r.status_code, r.json()["code"]) for r in refused} == {(409, "network_exhausted")}
    assert len(created) == capacity

    items = sim.get("/api/v1/instances", params={"limit": 100}).json()["items"]
    ips = [i["ip"] for i in items]
    assert len(ips) == len(set(ips)) == capacity
    assert set(ips) == {f"10.98.0.{n}" for n in range(2, 14)}
    macs = [i["mac"] for i in items]
    assert len(set(macs)) == capacity

    with sim.cloud.db.sessions() as s:
        rows = list(s.scalars(select(IPAllocation)))
    assert sorted(a.address for a in rows) == sorted(ips)
    backend = next(n for n in sim.driver.networks.values() if n.spec.cidr == "10.98.0.0/28")
    assert sorted(h.ip for h in backend.hosts.values()) == sorted(ips)


def test_concurrent_creates_through_the_service(sim: SimCloud, image: str) -> None:
    """The same guarantee without HTTP in between: ``Instances.create`` from 20 threads."""
    make_network(sim, "mid", "10.98.0.0/28")
    net_id = network(sim, "mid")["id"]
    with sim.cloud.db.sessions() as s:
        workspace_id = s.scalar(select(Workspace.id).where(Workspace.name == "default"))
    assert workspace_id is not None
    ctx = RequestContext(principal="test", workspace_id=workspace_id)
    start = threading.Barrier(20)

    def create(i: int) -> str:
        start.wait()
        try:
            _, op_id = sim.cloud.instances.create(
                ctx, CreateRequest(name=f"vm{i}", image=image, memory=64, network="mid")
            )
        except Exhausted:
            return "exhausted"
        return sim.cloud.ops.wait(ctx, op_id, 20).status

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(create, range(20)))
    assert outcomes.count("succeeded") == 12
    assert outcomes.count("exhausted") == 8
    with sim.cloud.db.sessions() as s:
        addresses = list(s.scalars(select(IPAllocation.address).where(IPAllocation.network_id == net_id)))
    assert len(addresses) == len(set(addresses)) == 12


# -- network conflicts ---------------------------------------------------------------------------
def test_delete_network_in_use_is_409(sim: SimCloud, create_vm: CreateVm) -> None:
    make_network(sim, "lab", "10.99.0.0/24")
    create_vm("web1", network="lab")
    resp = sim.delete("/api/v1/networks/lab", params={"wait": 10})
    assert resp.status_code == 409
    assert resp.json()["code"] == "network_in_use"
    assert network(sim, "lab")["status"] == "active"

    sim.delete("/api/v1/instances/web1", params={"wait": 10, "force": True})
    gone = sim.delete("/api/v1/networks/lab", params={"wait": 10})
    assert gone.status_code == 200 and gone.json()["status"] == "succeeded"
    assert sim.get("/api/v1/networks/lab").status_code == 404
    assert all(n.spec.cidr != "10.99.0.0/24" for n in sim.driver.networks.values())


@pytest.mark.parametrize("cidr", ["10.47.0.0/24", "10.47.0.0/16", "10.47.0.128/25"])
def test_overlapping_cidr_is_409(sim: SimCloud, cidr: str) -> None:
    before = sim.get("/api/v1/networks").json()
    resp = make_network(sim, "lab", cidr)
    assert resp.status_code == 409
    assert resp.json()["code"] == "cidr_overlap"
    assert "default" in resp.json()["detail"]
    assert sim.get("/api/v1/networks").json() == before
    assert len(sim.driver.networks) == 1


@pytest.mark.parametrize(
    "cidr",
    [
        "8.8.8.0/24",
        "100.64.0.0/24",
        "fd00::/64",
        "10.99.0.0/30",
        "10.0.0.0/15",
        "10.99.0.1/24",
        "nonsense",
        "",
    ],
)
def test_unusable_cidr_is_422(sim: SimCloud, cidr: str) -> None:
    resp = make_network(sim, "lab", cidr)
    assert resp.status_code == 422
    assert resp.json()["code"] == "invalid_cidr"
    assert sim.get("/api/v1/networks/lab").status_code == 404
    assert len(sim.driver.networks) == 1


def test_duplicate_network_name_is_409(sim: SimCloud) -> None:
    make_network(sim, "lab", "10.99.0.0/24")
    resp = make_network(sim, "lab", "10.98.0.0/24")
    assert resp.status_code == 409
    assert resp.json()["code"] == "name_taken"
    assert len(sim.get("/api/v1/networks").json()) == 2


def test_bad_network_name_is_422(sim: SimCloud) -> None:
    resp = make_network(sim, "Lab_1", "10.99.0.0/24")
    assert resp.status_code == 422
    assert resp.json()["code"] == "invalid_name"


def test_failed_backend_network_leaves_no_row(sim: SimCloud) -> None:
    sim.driver.fail_next["ensure_network"] = 1
    resp = make_network(sim, "lab", "10.99.0.0/24")
    assert resp.status_code == 200
    op = resp.json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "driver_error"
    assert sim.get("/api/v1/networks/lab").status_code == 404
    assert len(sim.driver.networks) == 1
    # the name and the cidr are free again
    assert make_network(sim, "lab", "10.99.0.0/24").json()["status"] == "succeeded"


def test_failed_network_delete_leaves_the_network_usable(
    sim: SimCloud, create_vm: CreateVm, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_network(sim, "lab", "10.99.0.0/24")

    def refuse(backend_name: str) -> None:
        raise DriverError("simulated failure in delete_network")

    monkeypatch.setattr(sim.driver, "delete_network", refuse)
    op = sim.delete("/api/v1/networks/lab", params={"wait": 10}).json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "driver_error"

    assert network(sim, "lab")["status"] == "active"  # it is still there, on the backend too
    assert create_vm("web1", network="lab").json()["status"] == "succeeded"
