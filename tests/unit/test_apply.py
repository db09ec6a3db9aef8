"""Declarative apply on the simulated driver: plan says what would change and changes nothing;
apply makes networks, images, VMs, containers and pools, converges sizes and power states, replaces
changed containers; a second apply changes nothing; conflicts and bad documents change nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.conftest import SimCloud
from tests.unit.test_api_bad_input import assert_refused


def post_apply(sim: SimCloud, document: Any, dry_run: bool = False) -> httpx.Response:
    body = {"document": document, "dry_run": dry_run}
    return sim.post("/api/v1/apply", params={"wait": 30}, json=body)  # type: ignore[no-any-return]


def actions(resp: httpx.Response) -> list[tuple[str, str, str]]:
    assert resp.status_code in (200, 202), resp.text
    return [(c["action"], c["kind"], c["name"]) for c in resp.json()["changes"]]


def document(image_path: Path, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "networks": [{"name": "back", "cidr": "10.48.0.0/24"}],
        "images": [{"name": "base", "path": str(image_path)}],
        "vms": [
            {
                "name": "web",
                "image": "base",
                "memory": 128,
                "nics": [{"network": "default"}, {"network": "back"}],
            },
            {"name": "db", "image": "base", "memory": 128, "network": "back", "state": "stopped"},
        ],
        "containers": [{"name": "box", "image": "local/busybox:latest", "command": ["sleep", "1000"]}],
        "pools": [
            {"name": "lab", "template": {"image": "base", "memory": 64}, "min_ready": 0, "max_size": 2}
        ],
    }
    doc.update(overrides)
    return doc


def test_plan_apply_and_apply_again(sim: SimCloud, qcow2_image: Path) -> None:
    doc = document(qcow2_image)
    plan = post_apply(sim, doc, dry_run=True)
    expected = [
        ("create", "network", "back"),
        ("create", "image", "base"),
        ("create", "vm", "web"),
        ("create", "vm", "db"),
        ("stop", "vm", "db"),
        ("create", "container", "box"),
        ("create", "pool", "lab"),
    ]
    assert actions(plan) == expected
    assert plan.json()["operation"] is None
    assert sim.get("/api/v1/instances").json()["total"] == 0  # a plan changes nothing

    applied = post_apply(sim, doc)
    assert actions(applied) == expected
    op = applied.json()["operation"]
    assert (op["kind"], op["status"]) == ("apply", "succeeded"), op
    web, db = sim.get("/api/v1/instances/web").json(), sim.get("/api/v1/instances/db").json()
    assert [n["network"] for n in web["nics"]] == ["default", "back"] and web["state"] == "running"
    assert (db["network"], db["state"]) == ("back", "stopped")
    assert sim.get("/api/v1/instances/box").json()["state"] == "running"
    assert sim.get("/api/v1/pools/lab").status_code == 200

    again = post_apply(sim, doc)
    assert actions(again) == [] and again.json()["operation"] is None


def test_apply_converges_size_power_and_containers(sim: SimCloud, qcow2_image: Path) -> None:
    doc = document(qcow2_image, pools=[])
    assert post_apply(sim, doc).json()["operation"]["status"] == "succeeded"
    doc["vms"][0].update(cpus=2, disk=3)  # vCPUs of a running VM: it is stopped, resized, started
    doc["vms"][1].update(state="running")
    doc["containers"][0].update(command=["sleep", "2000"], state="stopped")
    plan = actions(post_apply(sim, doc, dry_run=True))
    assert plan == [
        ("resize", "vm", "web"),
        ("start", "vm", "web"),
        ("start", "vm", "db"),
        ("replace", "container", "box"),
        ("stop", "container", "box"),
    ]
    op = post_apply(sim, doc).json()["operation"]
    assert op["status"] == "succeeded", op
    web = sim.get("/api/v1/instances/web").json()
    assert (web["cpus"], web["disk"], web["state"]) == (2, 3, "running")
    assert sim.get("/api/v1/instances/db").json()["state"] == "running"
    box = sim.get("/api/v1/instances/box").json()
    assert box["state"] == "stopped" and box["container"]["command"] == ["sleep", "2000"]
    assert actions(post_apply(sim, doc)) == []


def test_conflicts_refuse_the_whole_document(sim: SimCloud, qcow2_image: Path) -> None:
    doc = document(qcow2_image, pools=[])
    assert post_apply(sim, doc).json()["operation"]["status"] == "succeeded"
    doc["networks"][0]["cidr"] = "10.49.0.0/24"
    doc["vms"][0]["disk"] = 1
    doc["vms"][1].update(cpus=4)
    doc["containers"].append({"name": "new-box", "image": "local/busybox:latest"})
    plan = post_apply(sim, doc, dry_run=True).json()["changes"]
    conflicts = [(c["kind"], c["name"]) for c in plan if c["action"] == "conflict"]
    assert conflicts == [("network", "back")]
    body = assert_refused(post_apply(sim, doc), 409, "apply_conflict")
    assert [c["name"] for c in body["conflicts"]] == ["back"]
    assert sim.get("/api/v1/instances/new-box").status_code == 404  # nothing else was done either
    assert sim.get("/api/v1/instances/db").json()["cpus"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vms": [{"name": "x", "image": "nope"}]}, "names image 'nope'"),
        ({"vms": [{"name": "x", "image": "base", "network": "nowhere"}]}, "names network 'nowhere'"),
        ({"vms": [{"name": "x", "image": "base"}], "containers": [{"name": "x", "image": "i"}]}, "twice"),
        ({"vms": [{"name": "x", "image": "base", "colour": "red"}]}, "colour"),
        ({"servers": []}, "servers"),
    ],
    ids=["unknown-image", "unknown-network", "name-twice", "unknown-field", "unknown-kind"],
)
def test_bad_documents_are_422_and_change_nothing(
    sim: SimCloud, qcow2_image: Path, change: dict[str, Any], message: str
) -> None:
    doc = {"images": [{"name": "base", "path": str(qcow2_image)}], **change}
    for dry_run in (True, False):
        body = assert_refused(post_apply(sim, doc, dry_run=dry_run), 422, "invalid_document")
        assert message in body["detail"]
    assert sim.get("/api/v1/images").json() == []


def test_launch_from_config_json(sim: SimCloud, qcow2_image: Path) -> None:
    sim.post("/api/v1/images", params={"wait": 10}, json={"name": "tiny", "source_path": str(qcow2_image)})
    legacy = [
        {"name": "vm-a", "ram": 256, "cpu": 2, "disk": 4, "image": "tiny"},
        {"name": "vm-b", "ram": 128, "cpu": 1, "disk": 2, "image": "tiny"},
    ]
    assert actions(post_apply(sim, legacy, dry_run=True)) == [
        ("create", "vm", "vm-a"),
        ("create", "vm", "vm-b"),
    ]
    assert post_apply(sim, legacy).json()["operation"]["status"] == "succeeded"
    a = sim.get("/api/v1/instances/vm-a").json()
    assert (a["cpus"], a["memory"], a["disk"]) == (2, 256, 4)
    assert actions(post_apply(sim, legacy[0])) == []  # one object works too
    body = assert_refused(post_apply(sim, {"name": "c", "ram": 1, "cpu": 1}), 422, "invalid_document")
    assert "iso or image" in body["detail"]


def test_a_viewer_cannot_apply(sim: SimCloud, qcow2_image: Path) -> None:
    resp = sim.post("/api/v1/tokens", json={"name": "ro", "role": "viewer"})
    assert resp.status_code == 201, resp.text
    viewer = httpx.Headers({"Authorization": f"Bearer {resp.json()['token']}"})
    doc = document(qcow2_image)
    plan = sim.client.post("/api/v1/apply", json={"document": doc, "dry_run": True}, headers=viewer)
    assert plan.status_code == 200  # a plan only reads
    refused = sim.client.post("/api/v1/apply", json={"document": doc}, headers=viewer)
    assert_refused(refused, 403, "permission_denied")
    assert (
        sim.get("/api/v1/networks").json()[0]["name"] == "default"
        and len(sim.get("/api/v1/networks").json()) == 1
    )


def test_a_changed_pool_is_updated_in_place(sim: SimCloud, qcow2_image: Path) -> None:
    doc = document(qcow2_image, vms=[], containers=[])
    assert post_apply(sim, doc).json()["operation"]["status"] == "succeeded"
    pool_id = sim.get("/api/v1/pools/lab").json()["id"]
    doc["pools"][0].update(max_size=3, lease_default=600, template={"image": "base", "memory": 128})
    plan = post_apply(sim, doc, dry_run=True).json()["changes"]
    assert [(c["action"], c["name"]) for c in plan] == [("update", "lab")]
    assert "memory 64 -> 128" in plan[0]["detail"] and "max_size 2 -> 3" in plan[0]["detail"]
    assert post_apply(sim, doc).json()["operation"]["status"] == "succeeded"
    pool = sim.get("/api/v1/pools/lab").json()
    assert pool["id"] == pool_id  # the same pool, changed
    assert (pool["max_size"], pool["lease_default"], pool["template"]["memory"]) == (3, 600, 128)
    assert actions(post_apply(sim, doc)) == []  # and applying again changes nothing
