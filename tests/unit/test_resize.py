"""Resizing VMs on the simulated driver: vCPUs and memory while stopped, disks grow (also while
running), quota on growth, refusals that change nothing, and a failed resize keeps the old size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.unit.conftest import SimCloud


def resize(sim: SimCloud, ref: str, **body: Any) -> httpx.Response:
    return sim.post(f"/api/v1/instances/{ref}/resize", params={"wait": 10}, json=body)  # type: ignore[no-any-return]


def size_of(sim: SimCloud, ref: str) -> tuple[int, int, int]:
    vm = sim.get(f"/api/v1/instances/{ref}").json()
    return vm["cpus"], vm["memory"], vm["disk"]


def stopped_vm(sim: SimCloud, create_vm: Callable[..., httpx.Response], name: str = "web") -> str:
    vm_id: str = create_vm(name).json()["target_id"]
    assert sim.post(f"/api/v1/instances/{name}/actions/stop", params={"wait": 10}).status_code == 200
    return vm_id


def test_a_stopped_vm_gets_new_cpus_memory_and_disk(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    vm_id = stopped_vm(sim, create_vm)
    done = resize(sim, "web", cpus=2, memory=128, disk=3)
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    assert size_of(sim, "web") == (2, 128, 3)
    spec = sim.driver.specs[vm_id]
    assert (spec.cpus, spec.memory_mb, spec.disk_gb) == (2, 128, 3)


def test_a_running_vm_grows_but_shrinks_only_when_stopped(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    assert resize(sim, "web", disk=4).json()["status"] == "succeeded"
    assert resize(sim, "web", cpus=3).json()["status"] == "succeeded"  # plugged in while it runs
    assert resize(sim, "web", memory=192).json()["status"] == "succeeded"  # one 128 MiB block more
    assert size_of(sim, "web") == (3, 192, 4)
    for body in ({"cpus": 2}, {"memory": 128}, {"cpus": 4, "memory": 128}):  # less: only when stopped
        fewer = resize(sim, "web", **body)
        assert fewer.status_code == 409 and fewer.json()["code"] == "instance_running", body
    for body, code in (({"cpus": 9}, "instance_running"), ({"memory": 200}, "memory_step")):
        failed = resize(sim, "web", **body).json()  # the driver refuses: nothing changes
        assert failed["status"] == "failed" and failed["error"]["code"] == code, failed
    assert size_of(sim, "web") == (3, 192, 4)


def test_bad_resizes_change_nothing(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    stopped_vm(sim, create_vm)
    resize(sim, "web", disk=3)
    for body, status, code in (
        ({"disk": 2}, 422, "disk_shrink"),
        ({"disk": 3}, 422, "same_size"),
        ({"cpus": 0}, 422, "validation_error"),
        ({"memory": 10**9}, 422, "invalid_size"),
    ):
        got = resize(sim, "web", **body)
        assert (got.status_code, got.json().get("code")) == (status, code), (body, got.text)
    assert resize(sim, "nope", cpus=2).status_code == 404
    assert size_of(sim, "web") == (1, 64, 3)


def test_growth_counts_against_the_quota(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    stopped_vm(sim, create_vm)
    quota = sim.client.put(
        "/api/v1/workspaces/default/quota", json={"vcpus": 2, "disk_gb": 5}, headers=sim.headers
    )
    assert quota.status_code == 200, quota.text
    over = resize(sim, "web", cpus=3)
    assert over.status_code == 409 and over.json()["code"] == "quota_exceeded"
    assert resize(sim, "web", cpus=2, disk=5).json()["status"] == "succeeded"
    assert resize(sim, "web", disk=6).json()["code"] == "quota_exceeded"
    assert size_of(sim, "web") == (2, 64, 5)


def test_a_failed_resize_keeps_the_old_size(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    stopped_vm(sim, create_vm)
    sim.driver.fail_next["resize"] = 1
    failed = resize(sim, "web", cpus=2, memory=128)
    assert failed.json()["status"] == "failed"
    assert size_of(sim, "web") == (1, 64, 1)
    assert resize(sim, "web", cpus=2).json()["status"] == "succeeded"  # the lock was let go


def test_only_vms_are_resized(sim: SimCloud) -> None:
    body = {"kind": "container", "name": "box", "image": "local/busybox:latest"}
    assert sim.post("/api/v1/instances", json=body, params={"wait": 10}).status_code == 200
    refused = resize(sim, "box", cpus=2)
    assert refused.status_code == 422 and refused.json()["code"] == "not_a_vm"
    assert resize(sim, "nothing", cpus=2).status_code == 404
