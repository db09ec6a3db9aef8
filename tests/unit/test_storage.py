"""Storage pools and volumes on the simulated driver: the default pool, admin-only pool changes and
their validation, volume create/resize/delete with quotas and names, attach/detach (hot and cold,
one VM per volume even under concurrency), refusals that change nothing, failures that leave
nothing behind, and deleting a VM keeps its volumes. Plus the libvirt storage XML goldens."""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cloudlet.db.models import StoragePool, Volume, Workspace
from cloudlet.db.session import transaction
from cloudlet.drivers.libvirt.storage_xml import (
    StoragePool as PoolXml,
)
from cloudlet.drivers.libvirt.storage_xml import (
    StorageVolume,
    VolumeDisk,
    disk_by_target,
    disk_targets,
    serial_of,
)
from cloudlet.errors import CloudletError
from cloudlet.services import users
from cloudlet.services.context import RequestContext
from tests.unit.conftest import SimCloud

GIB = 1024**3
GOLDEN = Path(__file__).parent / "golden"
CreateVm = Callable[..., httpx.Response]


def volume(sim: SimCloud, name: str, size: int = 1, **body: Any) -> httpx.Response:
    return sim.post("/api/v1/volumes", params={"wait": 10}, json={"name": name, "size": size, **body})  # type: ignore[no-any-return]


def attach(sim: SimCloud, vm: str, vol: str) -> httpx.Response:
    return sim.post(f"/api/v1/instances/{vm}/volumes", params={"wait": 10}, json={"volume": vol})  # type: ignore[no-any-return]


def detach(sim: SimCloud, vm: str, vol: str) -> httpx.Response:
    return sim.delete(f"/api/v1/instances/{vm}/volumes/{vol}", params={"wait": 10})  # type: ignore[no-any-return]


def problem(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == code, resp.text


def footprint(sim: SimCloud) -> dict[str, Any]:
    """Every trace of volumes: rows, backend volumes and attachments."""
    with sim.cloud.db.reads() as s:
        rows = sorted(s.execute(select(Volume.name, Volume.status, Volume.size_gb, Volume.instance_id)).all())
    return {
        "rows": rows,
        "backend": sorted((n, sorted(p.volumes.items())) for n, p in sim.driver.pools.items()),
        "attached": {i: dict(t) for i, t in sim.driver.attachments.items() if t},
    }


def default_pool(sim: SimCloud) -> dict[str, Any]:
    pools = sim.get("/api/v1/storage-pools").json()
    return next(p for p in pools if p["default"])


def set_quota(sim: SimCloud, **limits: int) -> None:
    resp = sim.client.put("/api/v1/workspaces/default/quota", json=limits, headers=sim.headers)
    assert resp.status_code == 200, resp.text


def user_token(sim: SimCloud, name: str, role: str | None = None) -> dict[str, str]:
    """A signed-in user's headers; a member of the default workspace with ``role`` if given."""
    with transaction(sim.cloud.db.sessions) as s:
        users.create_user(s, name, "correct horse battery", is_admin=False)
    login = sim.client.post(
        "/api/v1/auth/login", json={"username": name, "password": "correct horse battery"}
    )
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    if role is not None:
        added = sim.post("/api/v1/workspaces/default/members", json={"username": name, "role": role})
        assert added.status_code in (200, 201), added.text
    return headers


def other_workspace(sim: SimCloud, name: str) -> dict[str, str]:
    """Headers of the owner of a new workspace ``name``, who is no member of the default one."""
    owner = user_token(sim, f"{name}-owner")
    assert sim.client.post("/api/v1/workspaces", json={"name": name}, headers=owner).status_code == 201
    return {**owner, "X-Cloudlet-Workspace": name}


def static(pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pool listings without the live numbers, which move with the host's disk."""
    return [{k: v for k, v in p.items() if k not in ("allocation", "available")} for p in pools]


# -- pools ---------------------------------------------------------------------------------------
def test_the_default_pool_is_made_on_start(sim: SimCloud) -> None:
    pool = default_pool(sim)
    assert pool["name"] == "default" and pool["kind"] == "dir" and pool["status"] == "active"
    assert pool["path"] == str(sim.data_dir / "volumes")
    assert pool["capacity"] > 0 and pool["available"] <= pool["capacity"] and pool["volumes"] == 0
    with sim.cloud.db.reads() as s:
        backend = s.scalar(select(StoragePool.backend_name).where(StoragePool.is_default.is_(True)))
    assert backend in sim.driver.pools and backend.startswith("cloudlet-")
    sim.cloud.storage_pools.ensure_default()  # a second start changes nothing
    assert len(sim.get("/api/v1/storage-pools").json()) == 1 and len(sim.driver.pools) == 1
    problem(sim.delete("/api/v1/storage-pools/default"), 409, "default_pool")


def test_admins_add_and_remove_pools(sim: SimCloud, tmp_path: Path) -> None:
    made = sim.post(
        "/api/v1/storage-pools", params={"wait": 10}, json={"name": "fast", "path": str(tmp_path / "fast")}
    )
    assert made.json()["status"] == "succeeded", made.text
    fast = sim.get("/api/v1/storage-pools/fast").json()
    assert (fast["kind"], fast["status"], fast["path"]) == ("dir", "active", str(tmp_path / "fast"))
    assert volume(sim, "data", 2, pool="fast").json()["status"] == "succeeded"
    assert sim.get("/api/v1/volumes/data").json()["pool"] == "fast"
    assert sim.get("/api/v1/storage-pools/fast").json()["volumes"] == 1
    problem(sim.delete("/api/v1/storage-pools/fast"), 409, "storage_pool_in_use")
    assert sim.delete("/api/v1/volumes/data", params={"wait": 10}).json()["status"] == "succeeded"
    assert sim.delete("/api/v1/storage-pools/fast", params={"wait": 10}).json()["status"] == "succeeded"
    assert [p["name"] for p in sim.get("/api/v1/storage-pools").json()] == ["default"]
    assert len(sim.driver.pools) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "Bad_Name", "path": "/srv/x"}, 422, "invalid_name"),
        ({"name": "p", "path": "relative/x"}, 422, "invalid_path"),
        ({"name": "p", "path": "/srv/../etc"}, 422, "invalid_path"),
        ({"name": "p", "path": "/srv//x"}, 422, "invalid_path"),
        ({"name": "p", "path": "/etc"}, 422, "invalid_path"),
        ({"name": "p", "path": "/srv/a\nb"}, 422, "invalid_path"),
        ({"name": "p", "path": "/srv/x", "kind": "lvm"}, 422, "validation_error"),
        ({"name": "p", "path": "/srv/x", "kind": "netfs"}, 422, "invalid_source"),
        (
            {
                "name": "p",
                "path": "/srv/x",
                "kind": "netfs",
                "source_host": "nfs;rm -rf",
                "source_path": "/e",
            },
            422,
            "invalid_host",
        ),
        (
            {"name": "p", "path": "/srv/x", "kind": "netfs", "source_host": "nfs1", "source_path": "e"},
            422,
            "invalid_path",
        ),
        ({"name": "p", "path": "/srv/x", "source_host": "nfs1", "source_path": "/e"}, 422, "invalid_source"),
        ({"name": "default", "path": "/srv/x"}, 409, "name_taken"),
    ],
)
def test_bad_pools_are_refused_and_change_nothing(
    shared_sim: SimCloud, body: dict[str, Any], status: int, code: str
) -> None:
    before = (shared_sim.get("/api/v1/storage-pools").json(), sorted(shared_sim.driver.pools))
    problem(shared_sim.post("/api/v1/storage-pools", json=body), status, code)
    after = (shared_sim.get("/api/v1/storage-pools").json(), sorted(shared_sim.driver.pools))
    assert (static(after[0]), after[1]) == (static(before[0]), before[1])


def test_a_pool_path_in_use_is_refused(sim: SimCloud) -> None:
    body = {"name": "again", "path": str(sim.data_dir / "volumes")}
    problem(sim.post("/api/v1/storage-pools", json=body), 409, "path_taken")


def test_only_system_admins_manage_pools_and_only_they_see_host_paths(sim: SimCloud, tmp_path: Path) -> None:
    owner = user_token(sim, "olga", "owner")
    body = {"name": "mine", "path": str(tmp_path / "mine")}
    problem(sim.client.post("/api/v1/storage-pools", json=body, headers=owner), 403, "permission_denied")
    problem(sim.client.delete("/api/v1/storage-pools/default", headers=owner), 403, "permission_denied")
    seen = sim.client.get("/api/v1/storage-pools", headers=owner).json()
    assert [p["name"] for p in seen] == ["default"] and seen[0]["path"] is None
    assert seen[0]["capacity"] > 0  # the numbers are for everyone: they pick pools by free space


def test_a_failed_pool_leaves_nothing(sim: SimCloud, tmp_path: Path) -> None:
    sim.driver.fail_next["ensure_pool"] = 1
    made = sim.post(
        "/api/v1/storage-pools", params={"wait": 10}, json={"name": "flaky", "path": str(tmp_path / "f")}
    )
    assert made.json()["status"] == "failed"
    assert [p["name"] for p in sim.get("/api/v1/storage-pools").json()] == ["default"]
    assert len(sim.driver.pools) == 1


# -- volumes -------------------------------------------------------------------------------------
def test_volume_life_cycle(sim: SimCloud) -> None:
    made = volume(sim, "data", 2)
    assert made.status_code == 200 and made.json()["status"] == "succeeded", made.text
    shown = sim.get("/api/v1/volumes/data").json()
    assert (shown["size"], shown["pool"], shown["status"], shown["attached_to"]) == (
        2,
        "default",
        "ready",
        None,
    )
    assert shown["serial"] == serial_of(shown["id"]) and shown["allocation"] is not None
    assert sim.get(f"/api/v1/volumes/{shown['id']}").json()["name"] == "data"
    backend = next(iter(p for p in sim.driver.pools.values()))
    assert backend.volumes == {shown["id"]: 2 * GIB}
    assert (
        sim.post("/api/v1/volumes/data/resize", params={"wait": 10}, json={"size": 5}).json()["status"]
        == "succeeded"
    )
    assert sim.get("/api/v1/volumes/data").json()["size"] == 5 and backend.volumes[shown["id"]] == 5 * GIB
    problem(sim.post("/api/v1/volumes/data/resize", json={"size": 4}), 422, "disk_shrink")
    problem(sim.post("/api/v1/volumes/data/resize", json={"size": 5}), 422, "same_size")
    assert [v["name"] for v in sim.get("/api/v1/volumes").json()] == ["data"]
    assert sim.delete("/api/v1/volumes/data", params={"wait": 10}).json()["status"] == "succeeded"
    assert sim.get("/api/v1/volumes").json() == [] and backend.volumes == {}
    problem(sim.get("/api/v1/volumes/data"), 404, "volume_not_found")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "taken", "size": 1}, 409, "name_taken"),
        ({"name": "-bad", "size": 1}, 422, "invalid_name"),
        ({"name": "x" * 64, "size": 1}, 422, "validation_error"),
        ({"name": "big", "size": 0}, 422, "validation_error"),
        ({"name": "big", "size": 10**6}, 422, "invalid_size"),
        ({"name": "nowhere", "size": 1, "pool": "nope"}, 422, "unknown_storage_pool"),
        ({"name": "nosize"}, 422, "validation_error"),
    ],
)
def test_bad_volumes_are_refused_and_change_nothing(
    sim: SimCloud, body: dict[str, Any], status: int, code: str
) -> None:
    assert volume(sim, "taken").json()["status"] == "succeeded"
    before = footprint(sim)
    problem(sim.post("/api/v1/volumes", json=body), status, code)
    assert footprint(sim) == before


def test_volumes_count_against_the_disk_quota(sim: SimCloud, create_vm: CreateVm) -> None:
    set_quota(sim, disk_gb=4)
    assert create_vm("web", disk=1).json()["status"] == "succeeded"
    assert volume(sim, "a", 2).json()["status"] == "succeeded"
    before = footprint(sim)
    over = sim.post("/api/v1/volumes", json={"name": "b", "size": 2})
    problem(over, 409, "quota_exceeded")
    assert over.json()["quota"] == "disk_gb" and over.json()["used"] == 3
    problem(sim.post("/api/v1/volumes/a/resize", json={"size": 4}), 409, "quota_exceeded")
    assert footprint(sim) == before
    assert volume(sim, "b", 1).json()["status"] == "succeeded"  # exactly up to the limit
    usage = sim.client.get("/api/v1/workspaces/default/quota", headers=sim.headers).json()
    assert usage["usage"]["disk_gb"] == 4  # the VM's 1 GiB and the volumes' 3
    sim.delete("/api/v1/volumes/b", params={"wait": 10})
    assert (
        sim.post("/api/v1/volumes/a/resize", params={"wait": 10}, json={"size": 3}).json()["status"]
        == "succeeded"
    )


def test_a_failed_create_leaves_nothing_and_frees_the_quota(sim: SimCloud) -> None:
    set_quota(sim, disk_gb=2)
    before = footprint(sim)
    sim.driver.fail_next["create_volume"] = 1
    failed = volume(sim, "data", 2)
    assert failed.json()["status"] == "failed" and failed.json()["error"]["code"] == "driver_error"
    assert footprint(sim) == before
    assert volume(sim, "data", 2).json()["status"] == "succeeded"


def test_a_failed_resize_keeps_the_old_size(sim: SimCloud) -> None:
    volume(sim, "data", 1)
    sim.driver.fail_next["resize_volume"] = 1
    assert (
        sim.post("/api/v1/volumes/data/resize", params={"wait": 10}, json={"size": 3}).json()["status"]
        == "failed"
    )
    shown = sim.get("/api/v1/volumes/data").json()
    assert (shown["size"], shown["status"]) == (1, "ready")


# -- attach and detach ---------------------------------------------------------------------------
def test_attach_hot_and_cold_detach_and_in_use(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web").json()["target_id"]
    create_vm("db")
    volume(sim, "data")
    volume(sim, "logs")
    done = attach(sim, "web", "data").json()
    assert done["status"] == "succeeded" and done["result"]["target"] == "vdc", done
    data = sim.get("/api/v1/volumes/data").json()
    assert (data["attached_to"], data["target"], data["status"]) == ("web", "vdc", "ready")
    assert sim.driver.attachments[vm_id] == {"vdc": data["id"]}
    # the VM stopped: the next one goes into its definition, on the next free disk
    sim.post("/api/v1/instances/web/actions/stop", params={"wait": 10})
    assert attach(sim, "web", "logs").json()["result"]["target"] == "vdd"
    listed = sim.get("/api/v1/instances/web/volumes").json()
    assert [(v["target"], v["name"]) for v in listed] == [("vdc", "data"), ("vdd", "logs")]
    before = footprint(sim)
    problem(sim.delete("/api/v1/volumes/data"), 409, "volume_in_use")
    problem(attach(sim, "db", "data"), 409, "volume_in_use")
    problem(attach(sim, "web", "data"), 409, "volume_in_use")
    problem(detach(sim, "db", "data"), 409, "volume_not_attached")
    problem(attach(sim, "web", "nope"), 422, "unknown_volume")
    problem(detach(sim, "web", "nope"), 404, "volume_not_found")
    problem(attach(sim, "nope", "data"), 404, "instance_not_found")
    assert footprint(sim) == before
    assert detach(sim, "web", "data").json()["status"] == "succeeded"
    assert sim.driver.attachments[vm_id] == {"vdd": sim.get("/api/v1/volumes/logs").json()["id"]}
    assert sim.get("/api/v1/volumes/data").json()["attached_to"] is None
    # the freed disk is handed out again
    assert attach(sim, "db", "data").json()["result"]["target"] == "vdc"
    assert attach(sim, "web", "data").status_code == 409
    detach(sim, "db", "data")
    assert sim.delete("/api/v1/volumes/data", params={"wait": 10}).json()["status"] == "succeeded"


def test_an_attached_volume_grows_in_place(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web")
    volume(sim, "data", 1)
    attach(sim, "web", "data")
    assert (
        sim.post("/api/v1/volumes/data/resize", params={"wait": 10}, json={"size": 2}).json()["status"]
        == "succeeded"
    )
    shown = sim.get("/api/v1/volumes/data").json()
    assert (shown["size"], shown["attached_to"], shown["status"]) == (2, "web", "ready")
    # the VM's lock was let go
    assert sim.post("/api/v1/instances/web/actions/stop", params={"wait": 10}).json()["status"] == "succeeded"


def test_concurrent_attaches_of_one_volume_exactly_one_wins(sim: SimCloud, create_vm: CreateVm) -> None:
    vms = [f"vm{i}" for i in range(8)]
    for name in vms:
        assert create_vm(name).json()["status"] == "succeeded"
    volume(sim, "shared")
    with sim.cloud.db.reads() as s:
        ws = s.scalar(select(Workspace.id).where(Workspace.name == "default"))
    ctx = RequestContext(principal="test", workspace_id=str(ws))
    barrier = threading.Barrier(len(vms))
    outcomes: list[str] = []

    def go(vm: str) -> None:
        barrier.wait()
        try:
            sim.cloud.volumes.attach(ctx, vm, "shared")
            outcomes.append("attached")
        except CloudletError as err:
            outcomes.append(err.code)

    threads = [threading.Thread(target=go, args=(vm,)) for vm in vms]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert outcomes.count("attached") == 1, outcomes
    assert set(outcomes) <= {"attached", "volume_in_use", "volume_busy"}
    # the winner's operation finishes; then exactly one VM has the disk
    for _ in range(200):
        if sim.get("/api/v1/volumes/shared").json()["status"] == "ready":
            break
        time.sleep(0.05)
    assert sim.get("/api/v1/volumes/shared").json()["attached_to"] in vms
    assert sum(1 for disks in sim.driver.attachments.values() if disks) == 1


def test_containers_take_no_volumes(sim: SimCloud) -> None:
    body = {"kind": "container", "name": "box", "image": "local/busybox:latest"}
    sim.post("/api/v1/instances", json=body, params={"wait": 10})
    volume(sim, "data")
    problem(attach(sim, "box", "data"), 422, "not_a_vm")
    assert sim.get("/api/v1/volumes/data").json()["attached_to"] is None


def test_a_failed_attach_releases_the_volume_and_the_vm(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web")
    volume(sim, "data")
    before = footprint(sim)
    sim.driver.fail_next["attach_volume"] = 1
    assert attach(sim, "web", "data").json()["status"] == "failed"
    assert footprint(sim) == before
    assert sim.get("/api/v1/volumes/data").json()["status"] == "ready"
    assert attach(sim, "web", "data").json()["status"] == "succeeded"
    sim.driver.fail_next["detach_volume"] = 1
    assert detach(sim, "web", "data").json()["status"] == "failed"
    shown = sim.get("/api/v1/volumes/data").json()
    assert (shown["attached_to"], shown["status"]) == ("web", "ready")  # still there, usable


def test_deleting_a_vm_keeps_its_volumes(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web").json()["target_id"]
    volume(sim, "data", 3)
    attach(sim, "web", "data")
    assert (
        sim.delete("/api/v1/instances/web", params={"force": True, "wait": 10}).json()["status"]
        == "succeeded"
    )
    shown = sim.get("/api/v1/volumes/data").json()
    assert (shown["attached_to"], shown["target"], shown["status"], shown["size"]) == (None, None, "ready", 3)
    assert vm_id not in sim.driver.attachments
    assert any(shown["id"] in p.volumes for p in sim.driver.pools.values())
    create_vm("web2")
    assert attach(sim, "web2", "data").json()["status"] == "succeeded"


def test_a_workspace_with_volumes_is_not_deleted(sim: SimCloud) -> None:
    volume_headers = other_workspace(sim, "team")
    made = sim.client.post(
        "/api/v1/volumes", params={"wait": 10}, json={"name": "d", "size": 1}, headers=volume_headers
    )
    assert made.json()["status"] == "succeeded", made.text
    problem(sim.client.delete("/api/v1/workspaces/team", headers=volume_headers), 409, "workspace_not_empty")


def test_another_workspace_cannot_see_or_use_a_volume(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web")
    volume(sim, "secret")
    vol_id = sim.get("/api/v1/volumes/secret").json()["id"]
    other = other_workspace(sim, "other")
    assert sim.client.get("/api/v1/volumes", headers=other).json() == []
    for ref in ("secret", vol_id):
        problem(sim.client.get(f"/api/v1/volumes/{ref}", headers=other), 404, "volume_not_found")
        problem(sim.client.delete(f"/api/v1/volumes/{ref}", headers=other), 404, "volume_not_found")
        problem(
            sim.client.post(f"/api/v1/volumes/{ref}/resize", json={"size": 9}, headers=other),
            404,
            "volume_not_found",
        )
    made = sim.client.post(
        "/api/v1/volumes", params={"wait": 10}, json={"name": "secret", "size": 1}, headers=other
    )
    assert made.json()["status"] == "succeeded"  # names are per workspace
    # their VM cannot take our volume, and ours cannot take theirs
    problem(
        sim.client.post("/api/v1/instances/web/volumes", json={"volume": vol_id}, headers=other),
        404,
        "instance_not_found",
    )
    theirs = sim.client.get("/api/v1/volumes/secret", headers=other).json()["id"]
    problem(attach(sim, "web", theirs), 422, "unknown_volume")
    assert sim.get("/api/v1/volumes/secret").json()["size"] == 1


# -- XML -----------------------------------------------------------------------------------------
def test_storage_xml_matches_the_golden_files() -> None:
    dir_pool = PoolXml(
        "cloudlet-d3adb33fcafe0001-6f1c2b9e-3d4a-4b5c-8d7e-9f0a1b2c3d4e", "dir", "/var/lib/cloudlet/volumes"
    )
    netfs = PoolXml(
        "cloudlet-d3adb33fcafe0001-0b5e7c1d-2a3f-4e6d-9c8b-7a6f5e4d3c2b",
        "netfs",
        "/srv/cloudlet/nfs1",
        "nfs.example.org",
        "/exports/cloudlet",
    )
    vol = StorageVolume("9f0a1b2c-3d4e-4b5c-8d7e-6f1c2b9e3d4a.qcow2", 10 * GIB)
    disk = VolumeDisk(
        "/var/lib/cloudlet/volumes/9f0a1b2c-3d4e-4b5c-8d7e-6f1c2b9e3d4a.qcow2",
        "vdc",
        serial_of("9f0a1b2c-3d4e-4b5c-8d7e-6f1c2b9e3d4a"),
    )
    assert dir_pool.to_xml() + "\n" == (GOLDEN / "pool_dir.xml").read_text()
    assert netfs.to_xml() + "\n" == (GOLDEN / "pool_netfs.xml").read_text()
    assert vol.to_xml() + "\n" == (GOLDEN / "volume.xml").read_text()
    assert disk.to_xml() + "\n" == (GOLDEN / "volume_disk.xml").read_text()
    assert PoolXml.from_xml(netfs.to_xml()) == netfs and PoolXml.from_xml(dir_pool.to_xml()) == dir_pool


def test_storage_xml_escapes_what_it_is_given() -> None:
    odd = PoolXml("p", "netfs", '/srv/"x"<y>&z', "nfs.example.org", "/e/</dir><evil/>")
    root = ET.fromstring(odd.to_xml())
    assert root.find("source/dir").get("path") == "/e/</dir><evil/>"  # type: ignore[union-attr]
    assert root.findtext("target/path") == '/srv/"x"<y>&z' and root.find(".//evil") is None
    with pytest.raises(ValueError):
        PoolXml("p", "netfs", "/srv/x").to_xml()
    with pytest.raises(ValueError):
        PoolXml("p", "iscsi", "/srv/x").to_xml()


def test_disk_lookup_by_target_in_a_domain_document() -> None:
    domain = (GOLDEN / "domain_basic.xml").read_text()
    assert disk_targets(domain) == {"vda", "vdb"}
    assert disk_by_target(domain, "vdc") is None
    found = disk_by_target(domain, "vdb")
    assert found is not None and ET.fromstring(found).find("readonly") is not None
    assert serial_of("9f0a1b2c-3d4e-4b5c-8d7e-6f1c2b9e3d4a") == "9f0a1b2c3d4e4b5c8d7e"
    with_volume = domain.replace("</devices>", VolumeDisk("/v/x.qcow2", "vdc", "abc").to_xml() + "</devices>")
    assert disk_targets(with_volume) == {"vda", "vdb", "vdc"}


def test_volume_rows_count_in_sql(sim: SimCloud) -> None:
    volume(sim, "a", 2)
    volume(sim, "b", 3)
    with sim.cloud.db.reads() as s:
        assert s.scalar(select(func.sum(Volume.size_gb))) == 5


def test_start_up_settles_volumes_a_dead_server_left_half_way(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web").json()["target_id"]
    for name in ("made", "gone", "plugged", "unplugged", "grown"):
        volume(sim, name, 1)
    attach(sim, "web", "unplugged")
    attach(sim, "web", "plugged")
    ids = {v["name"]: v["id"] for v in sim.get("/api/v1/volumes").json()}
    backend = next(iter(sim.driver.pools.values()))
    backend.volumes[ids["grown"]] = 3 * GIB  # the grow reached the backend, not the database
    with transaction(sim.cloud.db.sessions) as s:
        for name, status in (
            ("made", "creating"),
            ("gone", "deleting"),
            ("plugged", "attaching"),
            ("unplugged", "detaching"),
            ("grown", "resizing"),
        ):
            row = s.get(Volume, ids[name])
            assert row is not None
            row.status = status
    assert sim.cloud.volumes.recover() == 5
    shown = {v["name"]: v for v in sim.get("/api/v1/volumes").json()}
    assert sorted(shown) == ["grown", "plugged", "unplugged"]
    assert {v["status"] for v in shown.values()} == {"ready"}
    assert shown["grown"]["size"] == 3
    assert shown["plugged"]["attached_to"] is None and shown["unplugged"]["attached_to"] is None
    assert sim.driver.attachments.get(vm_id) == {}
    assert ids["made"] not in backend.volumes and ids["gone"] not in backend.volumes
    assert sim.cloud.volumes.recover() == 0  # nothing left to settle


def test_start_up_settles_pools_a_dead_server_left_half_way(sim: SimCloud, tmp_path: Path) -> None:
    for name in ("half", "going"):
        body = {"name": name, "path": str(tmp_path / name)}
        assert (
            sim.post("/api/v1/storage-pools", params={"wait": 10}, json=body).json()["status"] == "succeeded"
        )
    with transaction(sim.cloud.db.sessions) as s:
        for name, status in (("half", "creating"), ("going", "deleting")):
            row = s.scalar(select(StoragePool).where(StoragePool.name == name))
            assert row is not None
            row.status = status
    default = default_pool(sim)
    sim.driver.pools.clear()  # and the host lost its pools (say, libvirtd's state was wiped)
    sim.cloud.storage_pools.recover()
    assert [p["name"] for p in sim.get("/api/v1/storage-pools").json()] == ["default"]
    assert len(sim.driver.pools) == 1 and default_pool(sim)["capacity"] == default["capacity"]


def test_the_volume_set_of_a_vm_with_snapshots_stays_as_recorded(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web")
    volume(sim, "data")
    volume(sim, "more")
    attach(sim, "web", "data")
    snap = sim.post("/api/v1/instances/web/snapshots", params={"wait": 10}, json={"name": "s1"})
    assert snap.json()["status"] == "succeeded"
    before = footprint(sim)
    problem(detach(sim, "web", "data"), 409, "instance_has_snapshots")
    problem(attach(sim, "web", "more"), 409, "instance_has_snapshots")
    assert footprint(sim) == before
    sim.delete("/api/v1/instances/web/snapshots/s1", params={"wait": 10})
    assert detach(sim, "web", "data").json()["status"] == "succeeded"
    assert attach(sim, "web", "more").json()["status"] == "succeeded"
