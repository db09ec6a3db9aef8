"""VM snapshots on the simulated driver: create (memory when running), list, revert to the state
it was taken in, delete, name rules, busy and failure paths, and deleting the VM takes them along."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from cloudlet.db.models import Snapshot
from tests.unit.conftest import SimCloud


def snap(sim: SimCloud, vm: str, name: str, **body: Any) -> httpx.Response:
    return sim.post(f"/api/v1/instances/{vm}/snapshots", params={"wait": 10}, json={"name": name, **body})  # type: ignore[no-any-return]


def state(sim: SimCloud, vm: str) -> str:
    return sim.get(f"/api/v1/instances/{vm}").json()["state"]  # type: ignore[no-any-return]


def test_snapshots_of_a_running_and_a_stopped_vm(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    live = snap(sim, "web", "live", description="before the upgrade")
    assert live.json()["status"] == "succeeded" and live.json()["result"]["with_memory"] is True
    assert state(sim, "web") == "running"
    sim.post("/api/v1/instances/web/actions/stop", params={"wait": 10})
    cold = snap(sim, "web", "cold")
    assert cold.json()["result"]["with_memory"] is False
    listed = sim.get("/api/v1/instances/web/snapshots").json()
    assert [(x["name"], x["with_memory"], x["status"]) for x in listed] == [
        ("live", True, "ready"),
        ("cold", False, "ready"),
    ]
    assert listed[0]["description"] == "before the upgrade"
    # a snapshot with memory brings the VM back running; a disk-only one leaves it stopped
    back = sim.post("/api/v1/instances/web/snapshots/live/revert", params={"wait": 10})
    assert back.json()["status"] == "succeeded" and state(sim, "web") == "running"
    sim.post(f"/api/v1/instances/web/snapshots/{listed[1]['id']}/revert", params={"wait": 10})
    assert state(sim, "web") == "stopped"
    gone = sim.delete("/api/v1/instances/web/snapshots/cold", params={"wait": 10})
    assert gone.json()["status"] == "succeeded"
    assert [x["name"] for x in sim.get("/api/v1/instances/web/snapshots").json()] == ["live"]


def test_refusals_change_nothing(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    snap(sim, "web", "one")
    for name, code in (("one", "name_taken"), ("-bad", "invalid_name"), ("x" * 64, "validation_error")):
        got = snap(sim, "web", name)
        assert got.status_code in (409, 422) and got.json()["code"] == code, got.text
    assert sim.post("/api/v1/instances/web/snapshots/nope/revert").json()["code"] == "snapshot_not_found"
    assert sim.delete("/api/v1/instances/nope/snapshots/one").status_code == 404
    sim.driver.fail_next["snapshot"] = 1
    failed = snap(sim, "web", "two")
    assert failed.json()["status"] == "failed"
    assert [x["name"] for x in sim.get("/api/v1/instances/web/snapshots").json()] == ["one"]
    assert snap(sim, "web", "two").json()["status"] == "succeeded"  # the VM's lock was let go


def test_containers_have_no_snapshots(sim: SimCloud) -> None:
    body = {"kind": "container", "name": "box", "image": "local/busybox:latest"}
    sim.post("/api/v1/instances", json=body, params={"wait": 10})
    assert snap(sim, "box", "one").json()["code"] == "not_a_vm"


def test_deleting_the_vm_takes_its_snapshots(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    vm_id = create_vm("web").json()["target_id"]
    snap(sim, "web", "one")
    assert sim.delete("/api/v1/instances/web", params={"force": True, "wait": 10}).status_code == 200
    with sim.cloud.db.reads() as s:
        assert s.scalar(select(func.count()).select_from(Snapshot)) == 0
    assert vm_id not in sim.driver.snapshots


def size(body: dict[str, Any]) -> tuple[int, int, int]:
    return body["cpus"], body["memory"], body["disk"]


def test_a_revert_brings_back_the_size_the_vm_had(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    sim.post("/api/v1/instances/web/actions/stop", params={"wait": 10})
    before = sim.get("/api/v1/instances/web").json()
    assert snap(sim, "web", "small").json()["status"] == "succeeded"
    listed = sim.get("/api/v1/instances/web/snapshots").json()
    assert size(listed[0]) == size(before)
    grown = {"cpus": before["cpus"] + 1, "memory": before["memory"] * 2, "disk": before["disk"] + 2}
    resized = sim.post("/api/v1/instances/web/resize", params={"wait": 10}, json=grown)
    assert resized.json()["status"] == "succeeded", resized.text
    assert sim.get("/api/v1/instances/web").json()["disk"] == before["disk"] + 2
    back = sim.post("/api/v1/instances/web/snapshots/small/revert", params={"wait": 10})
    assert back.json()["status"] == "succeeded"
    after = sim.get("/api/v1/instances/web").json()
    assert size(after) == size(before)
