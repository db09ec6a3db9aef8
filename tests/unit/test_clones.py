"""Clones on the simulated driver: of a stopped VM or a snapshot, linked or full, each with its own
name, address and hostname; refusals and failures leave nothing behind and both VMs unlocked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.unit.conftest import SimCloud
from tests.unit.test_api_bad_input import ED25519, assert_refused

CreateVm = Callable[..., httpx.Response]
Footprint = Callable[[], dict[str, int]]


def clone(sim: SimCloud, source: str, name: str, **fields: Any) -> httpx.Response:
    body = {"name": name, **fields}
    return sim.post(f"/api/v1/instances/{source}/clone", params={"wait": 10}, json=body)  # type: ignore[no-any-return]


def vm(sim: SimCloud, ref: str) -> dict[str, Any]:
    found: dict[str, Any] = sim.get(f"/api/v1/instances/{ref}").json()
    return found


def stop(sim: SimCloud, ref: str) -> None:
    resp = sim.post(f"/api/v1/instances/{ref}/actions/stop", params={"wait": 10})
    assert resp.json()["status"] == "succeeded", resp.text


def test_clone_of_a_stopped_vm_is_a_vm_of_its_own(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web", cpus=2, memory=128, disk=2, ssh_keys=[ED25519])
    stop(sim, "web")
    resp = clone(sim, "web", "web-copy")
    assert resp.status_code == 200, resp.text
    op = resp.json()
    assert (op["status"], op["kind"]) == ("succeeded", "instance.clone"), op
    source, copy = vm(sim, "web"), vm(sim, "web-copy")
    assert op["result"] == {
        "instance_id": copy["id"],
        "ip": copy["ip"],
        "source_id": source["id"],
        "snapshot_id": None,
        "linked": True,
    }
    assert copy["state"] == "running" and source["state"] == "stopped"
    assert (copy["cpus"], copy["memory"], copy["disk"], copy["image"]) == (2, 128, 2, "tiny")
    assert copy["ip"] != source["ip"] and copy["mac"] != source["mac"]
    assert copy["hostname"] == "web-copy"
    spec = sim.driver.specs[copy["id"]]
    assert spec.ssh_keys == (ED25519,) and spec.nics[0].ip == copy["ip"]
    assert sim.driver.clones[copy["id"]] == (source["id"], True, None)
    # neither VM is left locked: both take actions again
    for name, action in (("web", "start"), ("web-copy", "reboot")):
        resp = sim.post(f"/api/v1/instances/{name}/actions/{action}", params={"wait": 10})
        assert resp.json()["status"] == "succeeded", resp.text


def test_full_clone_of_a_snapshot_while_the_source_runs(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web")
    snap = sim.post("/api/v1/instances/web/snapshots", params={"wait": 10}, json={"name": "base"})
    assert snap.json()["status"] == "succeeded"
    op = clone(sim, "web", "web-b", mode="full", snapshot="base", start=False, hostname="bee").json()
    assert op["status"] == "succeeded", op
    copy = vm(sim, "web-b")
    assert (copy["state"], copy["hostname"]) == ("stopped", "bee")
    assert sim.driver.clones[copy["id"]] == (vm(sim, "web")["id"], False, op["result"]["snapshot_id"])
    assert vm(sim, "web")["state"] == "running"


def test_refusals_leave_nothing(sim: SimCloud, create_vm: CreateVm, footprint: Footprint) -> None:
    create_vm("web")
    create_vm("other")
    before = footprint()
    assert_refused(clone(sim, "web", "copy"), 409, "instance_not_stopped")
    assert_refused(clone(sim, "web", "copy", snapshot="nope"), 404, "snapshot_not_found")
    assert footprint() == before
    stop(sim, "web")
    before = footprint()
    assert_refused(clone(sim, "web", "other"), 409, "name_taken")
    assert_refused(clone(sim, "web", "bad/name"), 422, "invalid_name")
    assert_refused(clone(sim, "nope", "copy"), 404, "instance_not_found")
    assert_refused(clone(sim, "web", "copy", mode="deep"), 422, "validation_error")
    assert footprint() == before
    assert vm(sim, "web")["state"] == "stopped"


def test_a_failed_copy_is_undone_and_unlocks_the_source(
    sim: SimCloud, create_vm: CreateVm, footprint: Footprint
) -> None:
    create_vm("web")
    stop(sim, "web")
    before = footprint()
    sim.driver.fail_next["clone"] = 1
    op = clone(sim, "web", "copy").json()
    assert op["status"] == "failed" and "simulated failure" in op["error"]["detail"], op
    assert footprint() == before
    assert (
        sim.post("/api/v1/instances/web/actions/start", params={"wait": 10}).json()["status"] == "succeeded"
    )


def test_containers_are_not_cloned(sim: SimCloud) -> None:
    body = {"kind": "container", "name": "box", "image": "local/busybox:latest"}
    assert sim.post("/api/v1/instances", json=body, params={"wait": 10}).json()["status"] == "succeeded"
    assert_refused(clone(sim, "box", "copy"), 422, "not_a_vm")
