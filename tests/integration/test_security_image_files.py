"""Issue 13, "Host files through an uploaded image", on the real libvirt and QEMU: an upload whose
qcow2 data file is the server's database (a stand-in holding a marker) is refused; an image that
became unsafe (imported before imports were checked, simulated by putting an unsafe file in a
real image's place) refuses VM create and publish, leaving no domain, disk, address or row; and
libvirt is given each disk's chain, so QEMU opens no file named inside an image even when one
appears under an existing VM."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from cloudlet.client import Client, OperationFailed
from tests.image_tricks import Listener, backed_image, data_file_image, host_file, network_names, swap
from tests.integration.conftest import domain_exists, import_tiny, traversable_tmp, wait_guest_http
from tests.integration.test_vm_images import domain_disks, image_file

pytestmark = pytest.mark.integration
UNSAFE = "unsafe_image"


@pytest.fixture
def tricks() -> Iterator[Path]:
    """A folder for the test's trick files that QEMU (libvirt-qemu) could reach if it tried."""
    folder = traversable_tmp("image-tricks-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def victim(sqlite_server, tiny_image) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """A real image of this test's own (the tiny guest), deleted afterwards with every VM of it."""
    name = f"victim-{secrets.token_hex(3)}"
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image, name)
        image = c.image(name)
        try:
            yield image
        finally:
            for vm in c.instances():
                if vm.get("image_id") == image["id"]:
                    with contextlib.suppress(Exception):
                        c.delete_instance(vm["id"], force=True)
            with contextlib.suppress(Exception):
                c.delete_image(name)


def image_files(server) -> set[str]:  # type: ignore[no-untyped-def]
    folder = Path(server.data_dir) / "images"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def refused(call: Any) -> dict[str, Any]:
    """Run ``call`` (an operation waited for); it must fail with ``unsafe_image``. The operation."""
    with pytest.raises(OperationFailed) as err:
        call()
    assert err.value.code == UNSAFE, err.value.detail
    return err.value.operation


def addresses_used(c: Client) -> int:
    return sum(int(n["addresses_used"]) for n in c.networks())


def test_an_upload_whose_data_file_is_the_database_is_refused(sqlite_server, tricks) -> None:  # type: ignore[no-untyped-def]
    target, _ = host_file(tricks / "host")
    evil = data_file_image(tricks, target)
    with sqlite_server.client() as c:
        before = image_files(sqlite_server)
        with evil.open("rb") as fh:
            refused(lambda: c.upload_image("evil", fh))
        assert "evil" not in {i["name"] for i in c.images()}
        assert image_files(sqlite_server) == before


@pytest.mark.parametrize("kind", ["data-file", "json-nbd"])
def test_create_on_an_unsafe_image_fails_and_leaves_nothing(
    sqlite_server, libvirt_conn, victim, tricks, kind: str
) -> None:  # type: ignore[no-untyped-def]
    target, _ = host_file(tricks / "host")
    instances = Path(sqlite_server.data_dir) / "instances"
    with sqlite_server.client() as c, Listener() as listener:
        evil = (
            data_file_image(tricks, target)
            if kind == "data-file"
            else backed_image(tricks, network_names(listener.port)["json-nbd"], "raw")
        )
        swap(image_file(sqlite_server, victim), evil)
        used, dirs = addresses_used(c), set(os.listdir(instances)) if instances.exists() else set()
        op = refused(lambda: c.create_instance(name="onvictim", image=victim["name"], memory=128))
        assert listener.count == 0, "a qemu-img or QEMU connected to the name inside the image"
        instance_id = op["target_id"]
        assert not domain_exists(libvirt_conn, instance_id)
        assert not (instances / instance_id).exists()
        assert (set(os.listdir(instances)) if instances.exists() else set()) == dirs
        assert "onvictim" not in {vm["name"] for vm in c.instances()}
        assert addresses_used(c) == used


def qemu_files(libvirt_conn, instance_id: str) -> set[str]:  # type: ignore[no-untyped-def]
    """The files the VM's QEMU process holds open."""
    name = f"cloudlet-{instance_id}"
    assert libvirt_conn.lookupByName(name).isActive()
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
    fds = Path(f"/proc/{pid}/fd")
    found = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            found.add(os.readlink(fd))
    return found


def test_libvirt_is_given_the_chain_and_follows_no_name_inside_the_image(
    sqlite_server, libvirt_conn, victim, tricks
) -> None:  # type: ignore[no-untyped-def]
    """A VM boots on its explicit chain (disk -> image, nothing under it). If a backing name then
    appears inside the image (a file changed under an existing VM), QEMU still opens only the
    files libvirt was given: not the host file, whose owner libvirt leaves alone too."""
    base = image_file(sqlite_server, victim)
    with sqlite_server.client() as c:
        c.create_instance(name="chain", image=victim["name"], memory=128)
        vm = c.instance("chain")
        wait_guest_http(vm["ip"], "chain")
        vda = domain_disks(libvirt_conn, vm["id"], libvirt.VIR_DOMAIN_XML_INACTIVE)[0]
        store = vda.find("backingStore")
        assert store is not None, "the definition leaves the chain to libvirt's probing"
        fmt, source, end = store.find("format"), store.find("source"), store.find("backingStore")
        assert fmt is not None and source is not None
        assert (fmt.get("type"), source.get("file")) == ("qcow2", str(base))
        assert end is not None and end.find("source") is None

        c.action("chain", "force-stop")
        target, _ = host_file(tricks / "host")
        owner = target.stat().st_uid
        swap(base, backed_image(tricks, str(target), "raw"))
        with pytest.raises(OperationFailed) as refused:  # cloudlet checks the image at each cold start
            c.action("chain", "start")
        assert refused.value.operation["error"]["code"] == "unsafe_image"
        # Beneath that check, libvirt holds to the chain it was given: started behind cloudlet's
        # back, QEMU still opens no name written inside the image.
        libvirt_conn.lookupByName(f"cloudlet-{vm['id']}").create()
        try:
            opened = qemu_files(libvirt_conn, vm["id"])
            assert str(base) in opened
            assert str(target) not in opened, "QEMU opened the file named inside the image"
            assert target.stat().st_uid == owner
        finally:
            c.delete_instance("chain", force=True)


def test_publish_of_a_vm_on_an_unsafe_image_is_refused(sqlite_server, victim, tricks) -> None:  # type: ignore[no-untyped-def]
    """The finding's way out: the VM's disk, read through to its base, published as an image."""
    target, marker = host_file(tricks / "host")
    with sqlite_server.client() as c:
        c.create_instance(name="pub", image=victim["name"], memory=128)
        c.action("pub", "force-stop")
        swap(image_file(sqlite_server, victim), data_file_image(tricks, target))
        before = image_files(sqlite_server)
        refused(lambda: c.publish_instance("pub", "leak"))
        assert "leak" not in {i["name"] for i in c.images()}
        assert image_files(sqlite_server) == before
        folder = Path(sqlite_server.data_dir) / "images"
        assert not any(marker in (folder / name).read_bytes() for name in before)
        assert c.instance("pub")["state"] == "stopped"
        c.delete_instance("pub", force=True)
