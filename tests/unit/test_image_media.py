"""ISO images, image properties checked at create, ISO installs with eject, and a stopped VM's
disk published as an image, on the simulated driver."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pycdlib
import pytest

from tests.unit.conftest import SimCloud
from tests.unit.test_images import assert_nothing_stored, image_rows, import_image, stored_files, upload

CreateVm = Callable[..., httpx.Response]


def make_iso(path: Path, label: str = "INSTALLER") -> Path:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=label)
    text = b"an installer would be here\n"
    iso.add_fp(io.BytesIO(text), len(text), "/README.TXT;1")
    iso.write(str(path))
    iso.close()
    return path


@pytest.fixture
def iso_file(tmp_path: Path) -> Path:
    return make_iso(tmp_path / "installer.iso")


@pytest.fixture
def iso(sim: SimCloud, iso_file: Path) -> str:
    op = import_image(sim, "installer", iso_file).json()
    assert op["status"] == "succeeded", op
    return "installer"


def patch(sim: SimCloud, ref: str, body: dict[str, Any]) -> httpx.Response:
    return sim.client.patch(f"/api/v1/images/{ref}", json=body, headers=sim.headers)


def vm(sim: SimCloud, name: str, image: str, **fields: Any) -> httpx.Response:
    body = {"name": name, "image": image, "memory": 64, **fields}
    return sim.post("/api/v1/instances", params={"wait": 10}, json=body)  # type: ignore[no-any-return]


def qemu_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


# -- ISO images ---------------------------------------------------------------------------------
def test_iso_is_detected_and_stored_as_iso(sim: SimCloud, iso: str, iso_file: Path) -> None:
    image = sim.get(f"/api/v1/images/{iso}").json()
    assert (image["format"], image["kind"], image["status"]) == ("iso", "iso", "ready")
    assert image["virtual_size"] == iso_file.stat().st_size
    assert stored_files(sim) == [f"{image['id']}.iso"]


def test_iso_upload_with_declared_format(sim: SimCloud, iso_file: Path) -> None:
    headers = {**sim.headers, "Content-Type": "application/octet-stream"}
    resp = sim.client.post(
        "/api/v1/images/upload",
        params={"name": "up", "format": "iso", "os": "tinylinux", "min_disk": 2, "wait": 10},
        content=iso_file.read_bytes(),
        headers=headers,
    )
    assert resp.json()["status"] == "succeeded", resp.text
    image = sim.get("/api/v1/images/up").json()
    assert (image["format"], image["os"], image["min_disk"]) == ("iso", "tinylinux", 2)


def test_a_disk_declared_iso_is_refused(sim: SimCloud, qcow2_image: Path) -> None:
    resp = sim.post(
        "/api/v1/images",
        params={"wait": 10},
        json={"name": "x", "source_path": str(qcow2_image), "format": "iso"},
    )
    op = resp.json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "invalid_image"
    assert "CD001" in op["error"]["detail"]
    assert_nothing_stored(sim)


def test_raw_bytes_without_cd001_declared_iso_are_refused(sim: SimCloud, tmp_path: Path) -> None:
    fake = tmp_path / "fake.iso"
    fake.write_bytes(b"\0" * (64 * 1024))
    resp = upload(sim, "fake", fake.read_bytes())
    assert resp.json()["status"] == "failed"
    assert_nothing_stored(sim)


def test_unknown_format_is_422(shared_sim: SimCloud, qcow2_image: Path) -> None:
    resp = shared_sim.post(
        "/api/v1/images", json={"name": "x", "source_path": str(qcow2_image), "format": "vmdk"}
    )
    assert resp.status_code == 422
    assert image_rows(shared_sim) == 0


# -- properties ---------------------------------------------------------------------------------
def test_properties_are_checked_at_create(sim: SimCloud, qcow2_image: Path) -> None:
    body = {
        "name": "big",
        "source_path": str(qcow2_image),
        "os": "debian12",
        "min_disk": 4,
        "min_memory": 256,
    }
    assert sim.post("/api/v1/images", params={"wait": 10}, json=body).json()["status"] == "succeeded"
    small_disk = vm(sim, "a", "big", disk=3, memory=512)
    assert small_disk.status_code == 422
    assert (small_disk.json()["code"], small_disk.json()["minimum_gb"]) == ("disk_too_small", 4)
    small_memory = vm(sim, "a", "big", disk=4, memory=128)
    assert small_memory.status_code == 422
    assert (small_memory.json()["code"], small_memory.json()["minimum_mb"]) == ("memory_too_small", 256)
    assert "256 MiB" in small_memory.json()["detail"]
    assert sim.get("/api/v1/instances").json()["total"] == 0
    assert vm(sim, "a", "big", disk=4, memory=256).json()["status"] == "succeeded"


def test_the_image_size_still_sets_the_least_disk(sim: SimCloud, make_qcow2: Callable[..., Path]) -> None:
    import_image(sim, "three", make_qcow2("three", "3G"))
    patch(sim, "three", {"min_disk": 2})
    resp = vm(sim, "a", "three", disk=2)
    assert (resp.status_code, resp.json()["code"], resp.json()["minimum_gb"]) == (422, "disk_too_small", 3)


def test_patch_sets_and_clears_properties(sim: SimCloud, image: str, create_vm: CreateVm) -> None:
    resp = patch(sim, image, {"os": "alpine 3.20", "min_memory": 1024})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["os"], resp.json()["min_memory"], resp.json()["min_disk"]) == (
        "alpine 3.20",
        1024,
        None,
    )
    assert create_vm("web1").json()["code"] == "memory_too_small"
    resp = patch(sim, image, {"min_memory": None})
    assert (resp.json()["os"], resp.json()["min_memory"]) == ("alpine 3.20", None)  # os untouched
    assert create_vm("web1").json()["status"] == "succeeded"
    assert sim.get(f"/api/v1/images/{image}").json()["os"] == "alpine 3.20"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"min_disk": 0}, "validation_error"),
        ({"min_memory": -1}, "validation_error"),
        ({"os": "x" * 65}, "validation_error"),
        ({"os": "debian\n12"}, "invalid_properties"),
        ({"os": "-rf"}, "invalid_properties"),
    ],
)
def test_bad_properties_are_422_and_change_nothing(
    sim: SimCloud, image: str, body: dict[str, Any], code: str
) -> None:
    resp = patch(sim, image, body)
    assert resp.status_code == 422
    assert resp.json()["code"] == code
    shown = sim.get(f"/api/v1/images/{image}").json()
    assert (shown["os"], shown["min_disk"], shown["min_memory"]) == (None, None, None)


def test_bad_properties_at_import_leave_nothing(sim: SimCloud, qcow2_image: Path) -> None:
    body = {"name": "x", "source_path": str(qcow2_image), "os": "two\nlines"}
    resp = sim.post("/api/v1/images", params={"wait": 10}, json=body)
    assert (resp.status_code, resp.json()["code"]) == (422, "invalid_properties")
    assert_nothing_stored(sim)


def test_publishing_to_everyone_still_needs_an_admin(sim: SimCloud, image: str) -> None:
    assert patch(sim, image, {"public": True}).json()["public"] is True  # the first token is an admin


# -- ISO installs ---------------------------------------------------------------------------------
def test_vm_from_an_iso_gets_an_empty_disk_and_the_cdrom(sim: SimCloud, iso: str) -> None:
    resp = vm(sim, "inst", iso, disk=3)
    assert resp.json()["status"] == "succeeded", resp.text
    instance = sim.get("/api/v1/instances/inst").json()
    spec = sim.driver.specs[instance["id"]]
    image = sim.get(f"/api/v1/images/{iso}").json()
    assert spec.install_media == sim.data_dir / "images" / f"{image['id']}.iso"
    assert (spec.image_path, spec.image_format, spec.disk_gb) == (None, None, 3)
    assert instance["image"] == iso


def test_iso_in_a_cdrom_cannot_be_deleted_until_ejected(sim: SimCloud, iso: str) -> None:
    vm(sim, "inst", iso)
    instance_id = sim.get("/api/v1/instances/inst").json()["id"]
    resp = sim.delete(f"/api/v1/images/{iso}", params={"wait": 10})
    assert (resp.status_code, resp.json()["code"]) == (409, "image_in_use")

    op = sim.post("/api/v1/instances/inst/cdrom/eject", params={"wait": 10}).json()
    assert (op["kind"], op["status"]) == ("instance.eject", "succeeded"), op
    assert instance_id not in sim.driver.media
    instance = sim.get("/api/v1/instances/inst").json()
    assert (instance["image"], instance["state"]) == (None, "running")

    again = sim.post("/api/v1/instances/inst/cdrom/eject", params={"wait": 10})
    assert (again.status_code, again.json()["code"]) == (409, "no_media")
    assert sim.delete(f"/api/v1/images/{iso}", params={"wait": 10}).json()["status"] == "succeeded"
    assert stored_files(sim) == []


def test_eject_needs_an_iso_vm(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web1")
    resp = sim.post("/api/v1/instances/web1/cdrom/eject", params={"wait": 10})
    assert (resp.status_code, resp.json()["code"]) == (409, "no_media")
    assert sim.post("/api/v1/instances/nope/cdrom/eject").status_code == 404


def test_failed_eject_keeps_the_media(sim: SimCloud, iso: str) -> None:
    vm(sim, "inst", iso)
    sim.driver.fail_next["eject_media"] = 1
    op = sim.post("/api/v1/instances/inst/cdrom/eject", params={"wait": 10}).json()
    assert op["status"] == "failed"
    assert sim.get("/api/v1/instances/inst").json()["image"] == iso
    assert sim.post("/api/v1/instances/inst/cdrom/eject", params={"wait": 10}).json()["status"] == "succeeded"


# -- publishing a VM's disk -----------------------------------------------------------------------
def test_publish_needs_a_stopped_vm(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web1")
    resp = sim.post("/api/v1/instances/web1/publish", params={"wait": 10}, json={"name": "golden"})
    assert (resp.status_code, resp.json()["code"]) == (409, "instance_running")
    assert image_rows(sim) == 1  # only the base image
    assert sim.get("/api/v1/instances/web1").json()["state"] == "running"


def test_publish_makes_a_flat_image_that_boots_vms(sim: SimCloud, image: str, create_vm: CreateVm) -> None:
    patch(sim, image, {"os": "tiny", "min_memory": 64})
    create_vm("web1")
    sim.post("/api/v1/instances/web1/actions/stop", params={"wait": 10})
    op = sim.post("/api/v1/instances/web1/publish", params={"wait": 10}, json={"name": "golden"}).json()
    assert (op["kind"], op["status"]) == ("instance.publish", "succeeded"), op
    golden = sim.get("/api/v1/images/golden").json()
    assert op["result"]["image_id"] == golden["id"]
    assert (golden["status"], golden["format"], golden["source"]) == ("ready", "qcow2", "instance:web1")
    assert (golden["os"], golden["min_memory"]) == ("tiny", 64)  # inherited from its origin
    info = qemu_info(sim.data_dir / "images" / f"{golden['id']}.qcow2")
    assert "backing-filename" not in info and info["virtual-size"] == 1024**3
    assert sim.get("/api/v1/instances/web1").json()["state"] == "stopped"  # unlocked, untouched
    assert (
        sim.post("/api/v1/instances/web1/actions/start", params={"wait": 10}).json()["status"] == "succeeded"
    )
    assert create_vm("web2", image="golden").json()["status"] == "succeeded"


def test_publish_with_a_taken_name_is_409(sim: SimCloud, image: str, create_vm: CreateVm) -> None:
    create_vm("web1")
    sim.post("/api/v1/instances/web1/actions/stop", params={"wait": 10})
    resp = sim.post("/api/v1/instances/web1/publish", params={"wait": 10}, json={"name": image})
    assert (resp.status_code, resp.json()["code"]) == (409, "name_taken")
    assert image_rows(sim) == 1
    assert sim.get("/api/v1/instances/web1").json()["state"] == "stopped"
    # the refused request took no lock
    assert (
        sim.post("/api/v1/instances/web1/actions/start", params={"wait": 10}).json()["status"] == "succeeded"
    )


def test_failed_publish_leaves_no_image_and_unlocks(sim: SimCloud, image: str, create_vm: CreateVm) -> None:
    create_vm("web1")
    sim.post("/api/v1/instances/web1/actions/stop", params={"wait": 10})
    files = stored_files(sim)
    sim.driver.fail_next["export_disk"] = 1
    op = sim.post("/api/v1/instances/web1/publish", params={"wait": 10}, json={"name": "golden"}).json()
    assert (op["status"], op["error"]["code"]) == ("failed", "driver_error")
    assert image_rows(sim) == 1
    assert sim.get("/api/v1/images/golden").status_code == 404
    assert stored_files(sim) == files
    assert (
        sim.post("/api/v1/instances/web1/actions/start", params={"wait": 10}).json()["status"] == "succeeded"
    )


@pytest.mark.parametrize("name", ["", "a b", "../x"])
def test_publish_with_a_bad_name_is_422(sim: SimCloud, create_vm: CreateVm, name: str) -> None:
    create_vm("web1")
    sim.post("/api/v1/instances/web1/actions/stop", params={"wait": 10})
    resp = sim.post("/api/v1/instances/web1/publish", json={"name": name})
    assert (resp.status_code, resp.json()["code"]) == (422, "invalid_name")
    assert image_rows(sim) == 1


def test_an_iso_vm_publishes_its_installed_disk(sim: SimCloud, iso: str) -> None:
    vm(sim, "inst", iso, disk=2)
    sim.post("/api/v1/instances/inst/actions/stop", params={"wait": 10})
    op = sim.post("/api/v1/instances/inst/publish", params={"wait": 10}, json={"name": "installed"}).json()
    assert op["status"] == "succeeded", op
    image = sim.get("/api/v1/images/installed").json()
    assert (image["format"], image["kind"], image["virtual_size"]) == ("qcow2", "disk", 2 * 1024**3)


def test_an_iso_installed_vm_is_cloned_whole_never_linked(sim: SimCloud, iso: str) -> None:
    vm(sim, "inst", iso)
    sim.post("/api/v1/instances/inst/actions/stop", params={"wait": 10})
    for ejected in (False, True):
        resp = sim.post("/api/v1/instances/inst/clone", params={"wait": 10}, json={"name": "copy"})
        assert (resp.status_code, resp.json()["code"]) == (409, "no_base_image"), resp.text
        assert "full clone" in resp.json()["detail"]
        if not ejected:
            sim.post("/api/v1/instances/inst/cdrom/eject", params={"wait": 10})
    assert sim.get("/api/v1/instances").json()["total"] == 1
    body = {"name": "copy", "mode": "full", "start": False}
    op = sim.post("/api/v1/instances/inst/clone", params={"wait": 10}, json=body).json()
    assert op["status"] == "succeeded", op
    copy = sim.get("/api/v1/instances/copy").json()
    spec = sim.driver.specs[copy["id"]]
    assert (copy["image"], spec.image_path, spec.install_media) == (None, None, None)
    assert sim.driver.clones[copy["id"]][1] is False  # full


def test_resize_keeps_the_image_minimum_memory(sim: SimCloud, image: str, create_vm: CreateVm) -> None:
    patch(sim, image, {"min_memory": 128})
    create_vm("web1", memory=256)
    sim.post("/api/v1/instances/web1/actions/stop", params={"wait": 10})
    resp = sim.post("/api/v1/instances/web1/resize", params={"wait": 10}, json={"memory": 64})
    assert (resp.status_code, resp.json()["code"], resp.json()["minimum_mb"]) == (
        422,
        "memory_too_small",
        128,
    )
    assert sim.get("/api/v1/instances/web1").json()["memory"] == 256
    ok = sim.post("/api/v1/instances/web1/resize", params={"wait": 10}, json={"memory": 128})
    assert ok.json()["status"] == "succeeded", ok.text
