"""Instances through the HTTP API on the simulated driver: create, list, actions, delete."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from cloudlet.db.models import Instance
from tests.unit.conftest import SimCloud

CreateVm = Callable[..., httpx.Response]


def instance(sim: SimCloud, ref: str) -> dict[str, Any]:
    resp = sim.get(f"/api/v1/instances/{ref}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def act(sim: SimCloud, ref: str, action: str) -> httpx.Response:
    return sim.post(f"/api/v1/instances/{ref}/actions/{action}", params={"wait": 10})


def default_network(sim: SimCloud) -> dict[str, Any]:
    resp = sim.get("/api/v1/networks/default")
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_create_with_wait_returns_the_finished_operation(sim: SimCloud, create_vm: CreateVm) -> None:
    resp = create_vm("web1", cpus=2, memory=256, disk=3)
    assert resp.status_code == 200
    op = resp.json()
    assert op["kind"] == "instance.create"
    assert op["status"] == "succeeded" and op["progress"] == 100
    assert resp.headers["location"] == f"/api/v1/operations/{op['id']}"

    vm = instance(sim, "web1")
    assert vm["id"] == op["target_id"] == op["result"]["instance_id"]
    assert (vm["state"], vm["cpus"], vm["memory"], vm["disk"]) == ("running", 2, 256, 3)
    assert (vm["image"], vm["network"], vm["hostname"]) == ("tiny", "default", "web1")
    assert ipaddress.ip_address(vm["ip"]) in ipaddress.ip_network("10.47.0.0/24")
    assert vm["ip"] == op["result"]["ip"]
    assert vm["ip"] != default_network(sim)["gateway"]


def test_created_vm_is_on_the_backend_with_its_dhcp_reservation(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web1", hostname="frontend")
    vm = instance(sim, "web1")
    assert sim.driver.instances[vm["id"]] == "running"
    spec = sim.driver.specs[vm["id"]]
    assert (spec.nics[0].mac, spec.nics[0].ip, spec.hostname) == (vm["mac"], vm["ip"], "frontend")
    hosts = sim.driver.dhcp_hosts(spec.nics[0].network)
    assert [(h.mac, h.ip, h.name) for h in hosts] == [(vm["mac"], vm["ip"], "frontend")]
    assert default_network(sim)["addresses_used"] == 1


def test_instance_can_be_fetched_by_id_or_name(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    assert instance(sim, vm_id)["name"] == "web1"
    assert instance(sim, "web1")["id"] == vm_id


def test_create_without_wait_is_202_and_the_operation_can_be_awaited(sim: SimCloud, image: str) -> None:
    resp = sim.post("/api/v1/instances", json={"name": "web1", "image": image, "memory": 64})
    assert resp.status_code in (200, 202)  # 200 only if the operation was already over
    location = resp.headers["location"]
    assert location == f"/api/v1/operations/{resp.json()['id']}"
    final = sim.get(location, params={"wait": 10})
    assert final.status_code == 200
    assert final.json()["status"] == "succeeded"
    assert instance(sim, "web1")["state"] == "running"


def test_two_vms_get_different_addresses(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web1")
    create_vm("web2")
    assert instance(sim, "web1")["ip"] != instance(sim, "web2")["ip"]
    assert instance(sim, "web1")["mac"] != instance(sim, "web2")["mac"]
    assert default_network(sim)["addresses_used"] == 2


def test_duplicate_name_is_409_and_allocates_nothing(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web1")
    resp = create_vm("web1")
    assert resp.status_code == 409
    assert resp.json()["code"] == "name_taken"
    assert sim.get("/api/v1/instances").json()["total"] == 1
    assert default_network(sim)["addresses_used"] == 1


# -- listing -------------------------------------------------------------------------------------
@pytest.fixture
def five_vms(sim: SimCloud, create_vm: CreateVm) -> list[str]:
    names = ["web1", "web2", "web3", "db1", "db2"]
    for name in names:
        assert create_vm(name).json()["status"] == "succeeded"
    for name in ("web2", "db2"):
        assert act(sim, name, "stop").json()["status"] == "succeeded"
    return names


def names_of(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [i["name"] for i in resp.json()["items"]]


def test_list_returns_all_oldest_first(sim: SimCloud, five_vms: list[str]) -> None:
    resp = sim.get("/api/v1/instances")
    assert names_of(resp) == five_vms
    assert resp.json()["total"] == 5


def test_list_filters_by_state(sim: SimCloud, five_vms: list[str]) -> None:
    assert names_of(sim.get("/api/v1/instances", params={"state": "stopped"})) == ["web2", "db2"]
    running = sim.get("/api/v1/instances", params={"state": "running"})
    assert names_of(running) == ["web1", "web3", "db1"]
    assert running.json()["total"] == 3
    assert names_of(sim.get("/api/v1/instances", params={"state": "error"})) == []


def test_list_filters_by_name_substring(sim: SimCloud, five_vms: list[str]) -> None:
    assert names_of(sim.get("/api/v1/instances", params={"name": "db"})) == ["db1", "db2"]
    assert names_of(sim.get("/api/v1/instances", params={"name": "web", "state": "stopped"})) == ["web2"]


@pytest.mark.parametrize("wildcard", ["%", "_", "w_b"])
def test_name_filter_treats_sql_wildcards_literally(
    sim: SimCloud, five_vms: list[str], wildcard: str
) -> None:
    assert names_of(sim.get("/api/v1/instances", params={"name": wildcard})) == []


def test_list_pagination(sim: SimCloud, five_vms: list[str]) -> None:
    pages = []
    for offset in (0, 2, 4):
        resp = sim.get("/api/v1/instances", params={"limit": 2, "offset": offset})
        body = resp.json()
        assert (body["total"], body["limit"], body["offset"]) == (5, 2, offset)
        pages.append(names_of(resp))
    assert pages == [five_vms[0:2], five_vms[2:4], five_vms[4:]]
    beyond = sim.get("/api/v1/instances", params={"limit": 2, "offset": 10})
    assert names_of(beyond) == [] and beyond.json()["total"] == 5


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"offset": -1}])
def test_list_rejects_bad_paging(sim: SimCloud, params: dict[str, int]) -> None:
    resp = sim.get("/api/v1/instances", params=params)
    assert resp.status_code == 422
    assert resp.json()["code"] == "validation_error"


# -- actions -------------------------------------------------------------------------------------
def test_stop_start_reboot_cycle(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]

    stop = act(sim, "web1", "stop")
    assert stop.status_code == 200 and stop.json()["status"] == "succeeded"
    assert instance(sim, "web1")["state"] == "stopped"
    assert sim.driver.instances[vm_id] == "stopped"

    start = act(sim, "web1", "start")
    assert start.json()["status"] == "succeeded"
    assert instance(sim, "web1")["state"] == "running"
    assert sim.driver.instances[vm_id] == "running"

    assert act(sim, "web1", "reboot").json()["status"] == "succeeded"
    assert instance(sim, "web1")["state"] == "running"

    assert act(sim, "web1", "force-stop").json()["status"] == "succeeded"
    assert instance(sim, "web1")["state"] == "stopped"


def test_ip_survives_stop_and_start(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web1")
    before = instance(sim, "web1")
    act(sim, "web1", "stop")
    act(sim, "web1", "start")
    after = instance(sim, "web1")
    assert (after["ip"], after["mac"]) == (before["ip"], before["mac"])


@pytest.mark.parametrize(
    ("setup", "action", "state"),
    [
        ([], "start", "running"),
        (["stop"], "stop", "stopped"),
        (["stop"], "reboot", "stopped"),
        (["stop"], "force-stop", "stopped"),
    ],
)
def test_invalid_transition_is_409_naming_action_and_state(
    sim: SimCloud, create_vm: CreateVm, setup: list[str], action: str, state: str
) -> None:
    create_vm("web1")
    for step in setup:
        assert act(sim, "web1", step).json()["status"] == "succeeded"
    ops_before = sim.get("/api/v1/operations").json()["total"]

    resp = act(sim, "web1", action)

    assert resp.status_code == 409
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["code"] == "invalid_state"
    assert (body["action"], body["state"]) == (action, state)
    assert action in body["detail"] and state in body["detail"]
    assert instance(sim, "web1")["state"] == state
    assert sim.get("/api/v1/operations").json()["total"] == ops_before


def test_action_on_a_busy_instance_is_409_and_records_no_operation(
    sim: SimCloud, create_vm: CreateVm
) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    act(sim, "web1", "stop")
    with sim.cloud.db.sessions() as s, s.begin():  # another operation holds the instance's lock
        s.execute(update(Instance).where(Instance.id == vm_id).values(locked_by="other-operation"))
    ops_before = sim.get("/api/v1/operations").json()["total"]

    resp = act(sim, "web1", "start")

    assert resp.status_code == 409
    assert resp.json()["code"] == "instance_busy"
    assert instance(sim, "web1")["state"] == "stopped"
    assert sim.driver.instances[vm_id] == "stopped"
    assert sim.get("/api/v1/operations").json()["total"] == ops_before


# -- delete --------------------------------------------------------------------------------------
def test_delete_running_without_force_is_409(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web1").json()["target_id"]
    resp = sim.delete("/api/v1/instances/web1", params={"wait": 10})
    assert resp.status_code == 409
    assert resp.json()["code"] == "instance_running"
    assert instance(sim, "web1")["state"] == "running"
    assert sim.driver.instances[vm_id] == "running"


def test_delete_running_with_force_removes_everything(
    sim: SimCloud, create_vm: CreateVm, footprint: Callable[[], dict[str, int]]
) -> None:
    create_vm("web1")
    assert default_network(sim)["addresses_used"] == 1

    resp = sim.delete("/api/v1/instances/web1", params={"wait": 10, "force": True})

    assert resp.status_code == 200
    assert resp.json()["status"] == "succeeded"
    assert sim.get("/api/v1/instances/web1").status_code == 404
    assert default_network(sim)["addresses_used"] == 0
    assert set(footprint().values()) == {0}


def test_delete_stopped_needs_no_force_and_frees_the_name(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web1")
    first_ip = instance(sim, "web1")["ip"]
    act(sim, "web1", "stop")
    assert sim.delete("/api/v1/instances/web1", params={"wait": 10}).json()["status"] == "succeeded"
    again = create_vm("web1")
    assert again.json()["status"] == "succeeded"
    assert instance(sim, "web1")["ip"] == first_ip  # the freed address is handed out again
