"""VMs with several NICs on several networks: one address, MAC and DHCP entry on each, the first
the primary; refusals leave nothing; networks in use by any NIC stay; clones get the same NICs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import yaml

from cloudlet.services.networks import mac_for
from tests.unit.conftest import SimCloud
from tests.unit.test_api_bad_input import assert_refused

CreateVm = Callable[..., httpx.Response]
Footprint = Callable[[], dict[str, int]]


@pytest.fixture
def second(sim: SimCloud) -> dict[str, Any]:
    resp = sim.post("/api/v1/networks", params={"wait": 10}, json={"name": "back", "cidr": "10.48.0.0/24"})
    assert resp.json()["status"] == "succeeded", resp.text
    found: dict[str, Any] = sim.get("/api/v1/networks/back").json()
    return found


def test_two_nics_on_two_networks(sim: SimCloud, create_vm: CreateVm, second: dict[str, Any]) -> None:
    resp = create_vm("web", nics=[{"network": "default"}, {"network": "back", "ip": "10.48.0.9"}])
    assert resp.json()["status"] == "succeeded", resp.text
    vm = sim.get("/api/v1/instances/web").json()
    assert [(n["network"], n["ip"]) for n in vm["nics"]] == [("default", vm["ip"]), ("back", "10.48.0.9")]
    assert vm["network"] == "default" and vm["mac"] == vm["nics"][0]["mac"]
    spec = sim.driver.specs[vm["id"]]
    assert [(n.ip, n.mac) for n in spec.nics] == [(n["ip"], n["mac"]) for n in vm["nics"]]
    assert [h.ip for h in sim.driver.dhcp_hosts(spec.nics[1].network)] == ["10.48.0.9"]
    assert sim.get("/api/v1/networks/back").json()["addresses_used"] == 1

    in_use = sim.delete("/api/v1/networks/back")
    assert_refused(in_use, 409, "network_in_use")

    assert sim.post("/api/v1/instances/web/actions/stop", params={"wait": 10}).json()["status"] == "succeeded"
    op = sim.post("/api/v1/instances/web/clone", params={"wait": 10}, json={"name": "web2"}).json()
    assert op["status"] == "succeeded", op
    copy = sim.get("/api/v1/instances/web2").json()
    assert [n["network"] for n in copy["nics"]] == ["default", "back"]
    assert {n["ip"] for n in copy["nics"]}.isdisjoint({n["ip"] for n in vm["nics"]})

    for name in ("web", "web2"):
        assert sim.delete(f"/api/v1/instances/{name}", params={"wait": 10, "force": True}).status_code == 200
    assert sim.driver.dhcp_hosts(spec.nics[1].network) == []
    assert sim.delete("/api/v1/networks/back", params={"wait": 10}).json()["status"] == "succeeded"


def test_static_config_covers_every_nic(sim: SimCloud, create_vm: CreateVm, second: dict[str, Any]) -> None:
    resp = create_vm("web", static_ip=True, nics=[{"network": "default"}, {"network": "back"}])
    assert resp.json()["status"] == "succeeded", resp.text
    vm = sim.get("/api/v1/instances/web").json()
    config = yaml.safe_load(sim.driver.specs[vm["id"]].network_config or "")
    eth0, eth1 = config["ethernets"]["eth0"], config["ethernets"]["eth1"]
    assert eth0["addresses"] == [f"{vm['nics'][0]['ip']}/24"] and "routes" in eth0 and "nameservers" in eth0
    assert eth1["addresses"] == [f"{vm['nics'][1]['ip']}/24"]
    assert eth1["match"]["macaddress"] == vm["nics"][1]["mac"]
    assert "routes" not in eth1 and "nameservers" not in eth1


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"nics": [{"network": "back"}], "network": "back"}, 422, "invalid_nics"),
        ({"nics": [{"network": "back"}], "ip": "10.47.0.5"}, 422, "invalid_nics"),
        ({"nics": [{"network": "default"}] * 9}, 422, "invalid_nics"),
        ({"nics": [{"network": "default"}, {"network": "nope"}]}, 422, "unknown_network"),
        ({"nics": [{"network": "default"}, {"network": "back", "ip": "10.47.0.9"}]}, 422, "invalid_ip"),
        ({"nics": [{"network": "default"}, {"network": "back", "ip": "10.48.0.3"}]}, 409, "ip_taken"),
    ],
    ids=["with-network", "with-ip", "too-many", "unknown", "wrong-subnet", "taken"],
)
def test_bad_nics_leave_nothing(
    sim: SimCloud,
    create_vm: CreateVm,
    footprint: Footprint,
    second: dict[str, Any],
    fields: dict[str, Any],
    status: int,
    code: str,
) -> None:
    assert create_vm("holder", nics=[{"network": "back", "ip": "10.48.0.3"}]).json()["status"] == "succeeded"
    before = footprint()
    assert_refused(create_vm("web", **fields), status, code)
    assert footprint() == before


def test_macs_are_as_unique_as_addresses() -> None:
    assert mac_for("10.16.0.5") == "52:54:0a:10:00:05"
    assert mac_for("10.16.0.5") == mac_for("10.16.0.5")  # dnsmasq's lease follows the address
    assert mac_for("10.16.0.5") != mac_for("172.16.0.5")  # same last three bytes, other networks
    first = int(mac_for("192.168.1.1").split(":")[0], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast
