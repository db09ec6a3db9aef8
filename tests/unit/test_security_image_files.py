"""Issue 13, "Host files through an uploaded image": an image file that names other files (a qcow2
external data file or backing file, json:/nbd:/http: names, a deeper layer's tricks, vmdk extents,
raw/qcow2 confusion) is refused at import (422 ``unsafe_image``, no row, no file left) and again
before every use (VM create, ISO install, clones, pools, publish), leaving nothing half-made.

The files are real, made by qemu-img; the services' checks run qemu-img on them even on the
simulated driver. The real libvirt path is in tests/integration/test_security_image_files.py."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloudlet.db.models import Image, Instance
from cloudlet.drivers import qemu_img
from cloudlet.drivers.libvirt.driver import _disks
from cloudlet.drivers.libvirt.xml import CloudletMetadata, Domain
from cloudlet.errors import Invalid
from tests.helpers import eventually
from tests.image_tricks import (
    Listener,
    OpenWatch,
    backed_image,
    data_file_image,
    host_file,
    network_names,
    swap,
    vmdk_naming,
)
from tests.unit.conftest import SimCloud, sim_cloud
from tests.unit.test_image_import import Handler
from tests.unit.test_image_media import make_iso
from tests.unit.test_images import assert_nothing_stored, import_image, stored_files

UNSAFE = "unsafe_image"
HOW = ["upload", "path", "url"]
DOMAIN: dict[str, Any] = {
    "name": "cloudlet-x",
    "uuid": "6f1c2b9e-3d4a-4b5c-8d7e-9f0a1b2c3d4e",
    "domain_type": "qemu",
    "memory_mb": 128,
    "vcpus": 1,
    "metadata": CloudletMetadata("6f1c2b9e-3d4a-4b5c-8d7e-9f0a1b2c3d4e", "x", "w"),
}


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimCloud]:
    """The simulated cloud, allowed to download from loopback, where the URL imports' file
    server listens (internal addresses are refused by default)."""
    with sim_cloud(tmp_path, outbound_allow=["127.0.0.1"]) as cloud:
        yield cloud


@pytest.fixture
def send(sim: SimCloud, tmp_path: Path) -> Iterator[Callable[..., dict[str, Any]]]:
    """Import a file through the API: ``send(how, name, path, **params)`` by upload, by path on
    the server, or by URL (from a loopback file server); the finished operation."""
    www = tmp_path / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def run(how: str, name: str, path: Path, **params: str) -> dict[str, Any]:
        if how == "upload":
            headers = {**sim.headers, "Content-Type": "application/octet-stream"}
            resp = sim.client.post(
                "/api/v1/images/upload",
                params={"name": name, "wait": 20, **params},
                content=path.read_bytes(),
                headers=headers,
            )
        else:
            if how == "url":
                shutil.copyfile(path, www / path.name)
                source = {"url": f"http://127.0.0.1:{server.server_address[1]}/{path.name}"}
            else:
                source = {"source_path": str(path)}
            resp = sim.post("/api/v1/images", params={"wait": 20}, json={"name": name, **source, **params})
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    try:
        yield run
    finally:
        server.shutdown()
        server.server_close()


def assert_refused(op: dict[str, Any], code: str = UNSAFE) -> None:
    assert op["status"] == "failed", f"accepted: {op.get('result')}"
    assert op["error"]["code"] == code, op["error"]
    assert op["error"]["status"] == 422


# -- at import -----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", HOW)
def test_qcow2_data_file_naming_a_host_file_is_refused(sim: SimCloud, send, tmp_path: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    """The finding: create + amend data_file=<the server's database>; a VM of it would boot with
    the database as its disk."""
    target, _ = host_file(tmp_path / "host")
    evil = data_file_image(tmp_path, target)
    op = send(how, "evil", evil)
    assert_refused(op)
    assert "external data file" in op["error"]["detail"]
    assert_nothing_stored(sim)


@pytest.mark.parametrize("how", HOW)
def test_qcow2_with_a_host_file_as_backing_is_refused(sim: SimCloud, send, tmp_path: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    target, _ = host_file(tmp_path / "host")
    op = send(how, "evil", backed_image(tmp_path, str(target), "raw"))
    assert_refused(op)
    assert "backing file" in op["error"]["detail"]
    assert_nothing_stored(sim)


@pytest.mark.parametrize("trick", ["json-nbd", "nbd-uri", "http-uri"])
@pytest.mark.parametrize("how", HOW)
def test_network_backing_names_are_refused_without_connecting(
    sim: SimCloud, send, tmp_path: Path, how: str, trick: str
) -> None:  # type: ignore[no-untyped-def]
    with Listener() as listener:
        evil = backed_image(tmp_path, network_names(listener.port)[trick], "raw")
        assert_refused(send(how, "evil", evil))
        assert listener.count == 0, "the import connected to the name inside the image"
    assert_nothing_stored(sim)


@pytest.mark.parametrize("deeper", ["data-file", "json-nbd"])
@pytest.mark.parametrize("how", HOW)
def test_a_trick_in_a_deeper_layer_is_refused_without_following(
    sim: SimCloud, send, tmp_path: Path, how: str, deeper: str
) -> None:  # type: ignore[no-untyped-def]
    """top -> middle -> (host file as data file | NBD): refused at the top, the chain never walked."""
    target, _ = host_file(tmp_path / "host")
    with Listener() as listener:
        if deeper == "data-file":
            middle = data_file_image(tmp_path, target, "middle.qcow2")
        else:
            middle = backed_image(tmp_path, network_names(listener.port)["json-nbd"], "raw", "middle.qcow2")
        top = backed_image(tmp_path, str(middle), "qcow2", "top.qcow2")
        assert_refused(send(how, "evil", top))
        assert listener.count == 0
    assert_nothing_stored(sim)


@pytest.mark.parametrize("how", HOW)
def test_a_vmdk_is_never_opened_as_vmdk(sim: SimCloud, send, tmp_path: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    """A vmdk descriptor names its extents, which qemu-img opens while it inspects. Only qcow2 and
    raw are ever opened as such: this one is a text file as raw, not a disk, and its extent (a
    FIFO that tells when it is opened) is never touched."""
    with OpenWatch(tmp_path / "extent") as extent:
        evil = vmdk_naming(tmp_path, extent.path)
        op = send(how, "evil", evil)
        assert not extent.was_opened(), "the import opened the file the vmdk names"
    assert_refused(op, "invalid_image")
    assert "vmdk" in op["error"]["detail"]
    assert_nothing_stored(sim)


@pytest.mark.parametrize("how", HOW)
def test_a_qcow2_declared_raw_is_refused(sim: SimCloud, send, tmp_path: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    """raw/qcow2 confusion: a qcow2 naming a host file, imported as "raw". Used as raw it would be
    harmless, but anything that probed it later would follow the name."""
    target, _ = host_file(tmp_path / "host")
    op = send(how, "evil", backed_image(tmp_path, str(target), "raw"), format="raw")
    assert_refused(op)
    assert_nothing_stored(sim)


def test_a_plain_qcow2_and_a_raw_disk_still_import(sim: SimCloud, send, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plain = tmp_path / "plain.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(plain), "1G"], check=True)
    raw = tmp_path / "disk.raw"
    data = bytearray(1024 * 1024)
    data[510:512] = b"\x55\xaa"
    raw.write_bytes(bytes(data))
    assert send("upload", "plain", plain)["status"] == "succeeded"
    assert send("path", "raw", raw)["status"] == "succeeded"
    assert sim.get("/api/v1/images/raw").json()["format"] == "raw"


# -- before use: images that were imported before imports were checked ---------------------------
def image_path(sim: SimCloud, ref: str) -> Path:
    with sim.cloud.db.reads() as s:
        row = s.scalar(select(Image).where(Image.name == ref))
        assert row is not None and row.path
        return Path(row.path)


@pytest.fixture
def evil_files(tmp_path: Path) -> Callable[[str, int], tuple[Path, bytes]]:
    """Makes an unsafe replacement file by kind: ("data-file" | "backing" | "json-nbd", listener
    port) -> (file, marker of the host file it names)."""

    def make(kind: str, port: int = 0) -> tuple[Path, bytes]:
        folder = tmp_path / f"evil-{kind}"
        folder.mkdir()
        target, marker = host_file(folder / "host")
        if kind == "data-file":
            return data_file_image(folder, target), marker
        if kind == "backing":
            return backed_image(folder, str(target), "raw"), marker
        return backed_image(folder, network_names(port)["json-nbd"], "raw"), marker

    return make


def create(sim: SimCloud, name: str, image: str) -> dict[str, Any]:
    body = {"name": name, "image": image, "memory": 64}
    resp = sim.post("/api/v1/instances", params={"wait": 20}, json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def nothing_left(footprint: Callable[[], dict[str, int]]) -> None:
    assert set(footprint().values()) == {0}, footprint()


@pytest.mark.parametrize("kind", ["data-file", "backing", "json-nbd"])
def test_vm_create_refuses_an_unsafe_image_and_leaves_nothing(
    sim: SimCloud, image: str, evil_files, footprint, kind: str
) -> None:  # type: ignore[no-untyped-def]
    with Listener() as listener:
        evil, _ = evil_files(kind, listener.port)
        swap(image_path(sim, image), evil)
        op = create(sim, "web1", image)
        assert listener.count == 0
    assert_refused(op)
    nothing_left(footprint)


def test_a_raw_image_that_reads_as_qcow2_is_refused(
    sim: SimCloud, tmp_path: Path, evil_files, footprint
) -> None:  # type: ignore[no-untyped-def]
    raw = tmp_path / "disk.raw"
    data = bytearray(1024 * 1024)
    data[510:512] = b"\x55\xaa"
    raw.write_bytes(bytes(data))
    assert import_image(sim, "rawdisk", raw).json()["status"] == "succeeded"
    evil, _ = evil_files("backing")
    swap(image_path(sim, "rawdisk"), evil)
    assert_refused(create(sim, "web1", "rawdisk"))
    nothing_left(footprint)


def test_an_iso_install_refuses_an_unsafe_iso(sim: SimCloud, tmp_path: Path, evil_files, footprint) -> None:  # type: ignore[no-untyped-def]
    assert import_image(sim, "installer", make_iso(tmp_path / "i.iso")).json()["status"] == "succeeded"
    evil, _ = evil_files("backing")
    swap(image_path(sim, "installer"), evil)
    op = sim.post(
        "/api/v1/instances", params={"wait": 20}, json={"name": "inst", "image": "installer", "memory": 64}
    ).json()
    assert_refused(op)
    nothing_left(footprint)


@pytest.fixture
def stopped_vm(sim: SimCloud, image: str) -> str:
    assert create(sim, "src", image)["status"] == "succeeded"
    resp = sim.post("/api/v1/instances/src/actions/stop", params={"wait": 10})
    assert resp.json()["status"] == "succeeded", resp.text
    return "src"


def instance_names(sim: SimCloud) -> list[str]:
    with sim.cloud.db.reads() as s:
        return sorted(s.scalars(select(Instance.name)))


@pytest.mark.parametrize("kind", ["data-file", "json-nbd"])
def test_a_cold_start_refuses_a_vm_whose_image_became_unsafe(
    sim: SimCloud, image: str, stopped_vm: str, evil_files, kind: str
) -> None:  # type: ignore[no-untyped-def]
    """A VM made before imports were checked may stand on an image naming host files: QEMU opens
    the image anew at each cold start, so each one checks it again."""
    with Listener() as listener:
        evil, _ = evil_files(kind, listener.port)
        swap(image_path(sim, image), evil)
        resp = sim.post(f"/api/v1/instances/{stopped_vm}/actions/start", params={"wait": 20})
        assert listener.count == 0
    assert resp.status_code == 200, resp.text
    assert_refused(resp.json())
    assert sim.get(f"/api/v1/instances/{stopped_vm}").json()["state"] == "stopped"


@pytest.mark.parametrize("linked", [True, False])
def test_clones_refuse_an_unsafe_image(
    sim: SimCloud, image: str, stopped_vm: str, evil_files, linked: bool
) -> None:  # type: ignore[no-untyped-def]
    evil, _ = evil_files("data-file")
    swap(image_path(sim, image), evil)
    before = len(sim.driver.instances)
    resp = sim.post(
        f"/api/v1/instances/{stopped_vm}/clone",
        params={"wait": 20},
        json={"name": "copy", "mode": "linked" if linked else "full"},
    )
    assert resp.status_code == 200, resp.text
    assert_refused(resp.json())
    assert instance_names(sim) == ["src"]
    assert len(sim.driver.instances) == before
    assert sim.get("/api/v1/instances/src").json()["state"] == "stopped"  # its lock is released


@pytest.mark.parametrize("kind", ["data-file", "json-nbd"])
def test_publish_refuses_a_vm_on_an_unsafe_image(
    sim: SimCloud, image: str, stopped_vm: str, evil_files, kind: str
) -> None:  # type: ignore[no-untyped-def]
    """The finding's way out: the VM's disk, read through to its base, published as an image."""
    with Listener() as listener:
        evil, marker = evil_files(kind, listener.port)
        swap(image_path(sim, image), evil)
        resp = sim.post(f"/api/v1/instances/{stopped_vm}/publish", params={"wait": 20}, json={"name": "leak"})
        assert listener.count == 0
    assert resp.status_code == 200, resp.text
    assert_refused(resp.json())
    assert sim.get("/api/v1/images/leak").status_code == 404
    folder = sim.data_dir / "images"
    assert stored_files(sim) == [image_path(sim, image).name]
    assert not any(marker in p.read_bytes() for p in folder.iterdir())


def test_a_pool_makes_no_vm_of_an_unsafe_image(sim: SimCloud, image: str, evil_files) -> None:  # type: ignore[no-untyped-def]
    evil, _ = evil_files("data-file")
    swap(image_path(sim, image), evil)
    body = {"name": "lab", "template": {"image": image, "memory": 64}, "min_ready": 1, "max_size": 2}
    assert sim.post("/api/v1/pools", json=body).status_code == 201
    sim.cloud.pools.reconcile()

    def failed() -> list[dict[str, Any]]:
        ops = sim.get("/api/v1/operations").json()["items"]
        creates = [o for o in ops if o["kind"] == "instance.create"]
        return creates if creates and all(o["status"] == "failed" for o in creates) else []

    for op in eventually(failed, timeout=20, interval=0.1, what="the pool's creates to fail"):
        assert op["error"]["code"] == UNSAFE
    assert instance_names(sim) == []
    assert sim.driver.instances == {}


# -- the gate itself -----------------------------------------------------------------------------
def qemu_json(*args: str) -> Any:
    out = subprocess.run(["qemu-img", "info", "--output=json", *args], capture_output=True, check=True)
    return json.loads(out.stdout)


def test_the_json_check_refuses_what_qemu_img_reports(tmp_path: Path) -> None:
    """``refusal`` reads qemu-img's own JSON (the second line, after the header check)."""
    target, _ = host_file(tmp_path / "host")
    data_file = qemu_json("-f", "qcow2", str(data_file_image(tmp_path, target)))
    backing = qemu_json("-f", "qcow2", str(backed_image(tmp_path, str(target), "raw")))
    vmdk = qemu_json("-f", "vmdk", str(vmdk_naming(tmp_path, target)))
    assert "external data file" in (qemu_img.refusal(data_file) or "")
    assert "backing file" in (qemu_img.refusal(backing) or "")
    assert "vmdk" in (qemu_img.refusal(vmdk) or "")
    assert "not a plain local file" in (qemu_img.refusal({**backing, "filename": "json:{}"}) or "")
    plain = tmp_path / "plain.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(plain), "1M"], check=True)
    assert qemu_img.refusal(qemu_json("-f", "qcow2", str(plain))) is None


def test_inspections_run_without_network(tmp_path: Path) -> None:
    """Even a qemu-img told to follow a chain cannot connect: inspections run in an empty network
    namespace. The same command outside it does reach the listener (so the probe would see it)."""
    if not qemu_img._no_network():
        pytest.skip("unshare --net is not possible here")
    with Listener() as listener:
        evil = backed_image(tmp_path, network_names(listener.port)["json-nbd"], "raw")
        args = ["info", "--backing-chain", "--output=json", "-f", "qcow2", str(evil)]
        with pytest.raises(Invalid):
            qemu_img._run(args, "following", isolated=True, invalid=True)
        assert listener.count == 0
        subprocess.run(["qemu-img", *args], capture_output=True, check=False, timeout=60)
        eventually(lambda: listener.count == 1, timeout=5, interval=0.1, what="the control connection")


def test_inspect_refuses_a_format_that_changed(tmp_path: Path) -> None:
    """Before use the recorded format is given: a qcow2 file in a raw image's place is refused
    even when it names nothing, and a raw file in a qcow2's place is not a qcow2."""
    plain = tmp_path / "plain.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(plain), "1M"], check=True)
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(1024 * 1024))
    with pytest.raises(Invalid) as err:
        qemu_img.inspect(plain, "raw")
    assert err.value.code == UNSAFE
    with pytest.raises(Invalid) as err:
        qemu_img.inspect(raw, "qcow2")
    assert err.value.code == "invalid_image"
    assert qemu_img.inspect(plain, "qcow2").virtual_size == 1024 * 1024
    assert qemu_img.inspect(raw).format == "raw"


def test_domain_disks_state_their_whole_chain() -> None:
    """libvirt gets every disk's chain from cloudlet (nothing probed, no name inside a file
    followed): the system disk on its image with the image's format, and no layer under that;
    the seed and the ISO with nothing under them."""
    base = Path("/var/lib/cloudlet/images/base.raw")
    disks = _disks(Path("/i/disk.qcow2"), Path("/i/seed.iso"), Path("/img/x.iso"), (base, "raw"))
    root = ET.fromstring(Domain(**DOMAIN, disks=disks).to_xml())
    vda, vdb, cdrom = root.findall("devices/disk")
    store = vda.find("backingStore")
    assert store is not None and store.get("type") == "file"
    fmt, source = store.find("format"), store.find("source")
    assert fmt is not None and source is not None
    assert (fmt.get("type"), source.get("file")) == ("raw", str(base))
    end = store.find("backingStore")
    assert end is not None and len(end) == 0 and not end.attrib
    for disk in (vdb, cdrom):
        only = disk.findall("backingStore")
        assert len(only) == 1 and len(only[0]) == 0
