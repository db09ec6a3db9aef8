"""Image import and upload: checked by qemu-img, hashed, stored; failures leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from cloudlet.db.models import Image
from tests.unit.conftest import SimCloud

CreateVm = Callable[..., httpx.Response]


def import_image(sim: SimCloud, name: str, path: Path | str) -> httpx.Response:
    return sim.post("/api/v1/images", params={"wait": 10}, json={"name": name, "source_path": str(path)})


def upload(sim: SimCloud, name: str, data: bytes) -> httpx.Response:
    headers = {**sim.headers, "Content-Type": "application/octet-stream"}
    return sim.client.post(
        "/api/v1/images/upload", params={"name": name, "wait": 10}, content=data, headers=headers
    )


def image_rows(sim: SimCloud) -> int:
    with sim.cloud.db.sessions() as s:
        return s.scalar(select(func.count()).select_from(Image)) or 0


def stored_files(sim: SimCloud) -> list[str]:
    folder = sim.data_dir / "images"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def assert_nothing_stored(sim: SimCloud) -> None:
    assert image_rows(sim) == 0
    assert sim.get("/api/v1/images").json() == []
    assert stored_files(sim) == []


def not_an_image(path: Path) -> Path:
    data = bytearray(os.urandom(100_000))  # not a whole number of sectors
    data[510:512] = b"\0\0"  # and surely no MBR boot signature
    path.write_bytes(bytes(data))
    return path


def test_import_from_a_path(sim: SimCloud, qcow2_image: Path) -> None:
    resp = import_image(sim, "tiny", qcow2_image)
    assert resp.status_code == 200
    op = resp.json()
    assert (op["kind"], op["status"]) == ("image.import", "succeeded")
    image = sim.get("/api/v1/images/tiny").json()
    assert (image["status"], image["format"], image["virtual_size"]) == ("ready", "qcow2", 1024**3)
    assert image["sha256"] == hashlib.sha256(qcow2_image.read_bytes()).hexdigest() == op["result"]["sha256"]
    assert image["file_size"] == qcow2_image.stat().st_size
    assert image["source"] == f"file://{qcow2_image}"
    assert stored_files(sim) == [f"{image['id']}.qcow2"]
    assert qcow2_image.exists()  # the source is copied, not moved


def test_upload_works_and_hashes_the_bytes(sim: SimCloud, qcow2_image: Path) -> None:
    data = qcow2_image.read_bytes()
    resp = upload(sim, "uploaded", data)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "succeeded"
    image = sim.get("/api/v1/images/uploaded").json()
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert (image["status"], image["format"], image["file_size"]) == ("ready", "qcow2", len(data))
    assert image["source"] == "upload"
    stored = sim.data_dir / "images" / f"{image['id']}.qcow2"
    assert stored_files(sim) == [stored.name]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == image["sha256"]


def test_uploaded_image_can_boot_a_vm(sim: SimCloud, qcow2_image: Path) -> None:
    upload(sim, "uploaded", qcow2_image.read_bytes())
    body = {"name": "web1", "image": "uploaded", "memory": 64}
    assert sim.post("/api/v1/instances", params={"wait": 10}, json=body).json()["status"] == "succeeded"


def test_raw_disk_with_a_partition_table_is_accepted(sim: SimCloud, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    data = bytearray(1024 * 1024)
    data[510:512] = b"\x55\xaa"  # MBR boot signature
    raw.write_bytes(bytes(data))
    assert import_image(sim, "rawdisk", raw).json()["status"] == "succeeded"
    assert sim.get("/api/v1/images/rawdisk").json()["format"] == "raw"


@pytest.mark.parametrize("how", ["import", "upload"])
def test_non_image_file_is_refused_and_leaves_nothing(sim: SimCloud, tmp_path: Path, how: str) -> None:
    """Random bytes are no disk image; qemu-img calls any file it does not recognise 'raw'."""
    junk = not_an_image(tmp_path / "junk.bin")
    resp = import_image(sim, "junk", junk) if how == "import" else upload(sim, "junk", junk.read_bytes())
    assert resp.status_code == 200, resp.text
    op = resp.json()
    assert op["status"] == "failed", f"random bytes were accepted as a {op['result']['format']} image"
    assert op["error"]["code"] == "invalid_image"
    assert_nothing_stored(sim)


def test_text_file_is_refused(sim: SimCloud, tmp_path: Path) -> None:
    page = tmp_path / "download.html"
    page.write_text("<html><body>404 Not Found</body></html>\n")
    op = import_image(sim, "page", page).json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "invalid_image"
    assert_nothing_stored(sim)


def test_corrupt_qcow2_is_refused(sim: SimCloud, qcow2_image: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.qcow2"
    data = bytearray(qcow2_image.read_bytes())
    data[40:48] = (0x10_0000_0000).to_bytes(8, "big")  # L1 table offset past the end of the file
    broken.write_bytes(bytes(data))
    op = import_image(sim, "broken", broken).json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "invalid_image"
    assert_nothing_stored(sim)


def test_qcow2_with_a_backing_file_is_refused(sim: SimCloud, make_qcow2: Callable[..., Path]) -> None:
    base = make_qcow2("base")
    overlay = make_qcow2("overlay", backing=base)
    op = import_image(sim, "overlay", overlay).json()
    assert op["status"] == "failed"
    assert op["error"]["code"] == "unsafe_image"
    assert "backing file" in op["error"]["detail"]
    assert_nothing_stored(sim)


def test_empty_upload_is_422_and_leaves_nothing(sim: SimCloud) -> None:
    resp = upload(sim, "empty", b"")
    assert resp.status_code == 422
    assert resp.json()["code"] == "invalid_image"
    assert_nothing_stored(sim)


@pytest.mark.parametrize("name", ["", "-x", "a/b", "../etc", "x" * 65, "a b"])
def test_bad_image_name_is_422(sim: SimCloud, qcow2_image: Path, name: str) -> None:
    for resp in (import_image(sim, name, qcow2_image), upload(sim, name, qcow2_image.read_bytes())):
        assert resp.status_code == 422
        assert resp.json()["code"] == "invalid_name"
    assert_nothing_stored(sim)


def test_versioned_image_names_are_fine(sim: SimCloud, qcow2_image: Path) -> None:
    assert import_image(sim, "Debian-12.5_v2", qcow2_image).json()["status"] == "succeeded"


def test_duplicate_name_is_409(sim: SimCloud, qcow2_image: Path) -> None:
    import_image(sim, "tiny", qcow2_image)
    files = stored_files(sim)
    for resp in (import_image(sim, "tiny", qcow2_image), upload(sim, "tiny", qcow2_image.read_bytes())):
        assert resp.status_code == 409
        assert resp.json()["code"] == "name_taken"
    assert image_rows(sim) == 1
    assert stored_files(sim) == files  # no staged upload left behind


@pytest.mark.parametrize("path", ["relative/disk.qcow2", "disk.qcow2", "./disk.qcow2"])
def test_relative_source_path_is_422(sim: SimCloud, path: str) -> None:
    resp = import_image(sim, "x", path)
    assert resp.status_code == 422
    assert resp.json()["code"] == "invalid_path"
    assert_nothing_stored(sim)


def test_missing_source_file_is_422(sim: SimCloud) -> None:
    resp = import_image(sim, "x", sim.data_dir / "no-such.qcow2")
    assert resp.status_code == 422
    assert resp.json()["code"] == "source_not_found"
    assert_nothing_stored(sim)


@pytest.mark.parametrize("path", ["/etc/hostname", "/etc/passwd", "/nonexistent/x.qcow2"])
def test_import_from_outside_the_allowed_folders_is_403(sim: SimCloud, path: str) -> None:
    """A path import must not let API users copy arbitrary host files into images."""
    resp = import_image(sim, "x", path)
    assert resp.status_code == 403
    assert resp.json()["code"] == "import_path_forbidden"
    assert_nothing_stored(sim)


def test_symlink_out_of_an_allowed_folder_is_403(sim: SimCloud) -> None:
    link = sim.data_dir / "innocent.qcow2"
    link.symlink_to("/etc/passwd")
    resp = import_image(sim, "x", link)
    assert resp.status_code == 403
    assert resp.json()["code"] == "import_path_forbidden"
    assert_nothing_stored(sim)


def test_directory_as_source_is_422(sim: SimCloud, tmp_path: Path) -> None:
    resp = import_image(sim, "x", tmp_path)
    assert resp.status_code == 422
    assert resp.json()["code"] == "source_not_found"


def test_delete_image_in_use_is_409(sim: SimCloud, image: str, create_vm: CreateVm) -> None:
    create_vm("web1")
    resp = sim.delete(f"/api/v1/images/{image}", params={"wait": 10})
    assert resp.status_code == 409
    assert resp.json()["code"] == "image_in_use"
    assert sim.get(f"/api/v1/images/{image}").json()["status"] == "ready"
    assert len(stored_files(sim)) == 1


def test_delete_unused_image_removes_row_and_file(sim: SimCloud, image: str, create_vm: CreateVm) -> None:
    create_vm("web1")
    sim.delete("/api/v1/instances/web1", params={"wait": 10, "force": True})
    resp = sim.delete(f"/api/v1/images/{image}", params={"wait": 10})
    assert resp.status_code == 200
    assert resp.json()["status"] == "succeeded"
    assert sim.get(f"/api/v1/images/{image}").status_code == 404
    assert_nothing_stored(sim)


def test_image_list_is_sorted_by_name(sim: SimCloud, qcow2_image: Path) -> None:
    for name in ("zeta", "alpha", "mid"):
        import_image(sim, name, qcow2_image)
    images: list[dict[str, Any]] = sim.get("/api/v1/images").json()
    assert [i["name"] for i in images] == ["alpha", "mid", "zeta"]
    assert len({i["id"] for i in images}) == 3


def test_raw_image_keeps_its_format_and_size(sim: SimCloud, tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "2M"], check=True)
    with raw.open("r+b") as fh:
        fh.seek(510)
        fh.write(b"\x55\xaa")
    op = import_image(sim, "raw2m", raw).json()
    assert op["status"] == "succeeded"
    assert (op["result"]["format"], op["result"]["virtual_size"]) == ("raw", 2 * 1024 * 1024)
