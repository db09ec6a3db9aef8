"""Volumes on the real libvirt, with one tiny guest for the module.

The default storage pool is a libvirt dir pool in the server's data dir whose numbers match the
file system's. A volume hot-plugged into the running guest shows up there as a new virtio disk
(found by its serial) of the right size; a marker written to it survives an online grow, a live
detach, a cold attach to the stopped VM and its restart, a VM snapshot's revert (which takes the
volume back too), and the VM's deletion. An attached volume cannot be deleted (409, also through
the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudlet.client import ApiError, OperationFailed
from tests.helpers import eventually
from tests.integration.conftest import Server, import_tiny, ssh_run, wait_guest_ssh
from tests.integration.test_events_and_cli import _cli

pytestmark = pytest.mark.integration
GIB = 1024**3


@pytest.fixture(scope="module")
def vm(sqlite_server: Server, tiny_image: Path, ssh_key: tuple[Path, str]) -> Iterator[dict[str, Any]]:
    key, pub = ssh_key
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        c.create_instance(name="vols", image="tiny", memory=128, ssh_keys=[pub])
        found = c.instance("vols")
    wait_guest_ssh(key, found["ip"])
    yield found


def guest_disk(key: Path, ip: str, serial: str) -> str:
    """The guest's name of the virtio disk with this serial ("" when it has none)."""
    script = (
        "for d in /sys/block/vd*; do "
        f'[ "$(cat $d/serial 2>/dev/null)" = "{serial}" ] && echo ${{d##*/}}; '
        "done; true"
    )
    out = ssh_run(key, ip, script)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def sectors(key: Path, ip: str, disk: str) -> int:
    out = ssh_run(key, ip, f"cat /sys/block/{disk}/size")
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def write_marker(key: Path, ip: str, disk: str, text: str) -> None:
    out = ssh_run(key, ip, f"echo {text} | dd of=/dev/{disk} bs=1M seek=100 conv=fsync 2>/dev/null")
    assert out.returncode == 0, out.stderr


def read_marker(key: Path, ip: str, disk: str) -> str:
    out = ssh_run(
        key, ip, f"dd if=/dev/{disk} bs=1M skip=100 count=1 2>/dev/null | head -c 16 | tr -d '\\000\\n'"
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def written_at(path: Path, offset: int) -> bool:
    """Whether the qcow2 file holds data written at ``offset`` of its disk."""
    out = subprocess.run(
        ["qemu-img", "map", "--output=json", "-U", str(path)], capture_output=True, text=True, check=True
    )
    return any(m["data"] and m["start"] <= offset < m["start"] + m["length"] for m in json.loads(out.stdout))


def test_the_default_pool_is_a_libvirt_pool_with_the_file_systems_numbers(
    sqlite_server: Server, libvirt_conn: Any
) -> None:
    with sqlite_server.client() as c:
        pools = c.storage_pools()
    assert [(p["name"], p["kind"], p["status"], p["default"]) for p in pools] == [
        ("default", "dir", "active", True)
    ]
    pool = pools[0]
    folder = sqlite_server.data_dir / "volumes"
    assert pool["path"] == str(folder) and folder.is_dir()
    fs = os.statvfs(folder)
    assert pool["capacity"] == fs.f_blocks * fs.f_frsize
    # libvirt counts root's reserved blocks as available; others write to this disk meanwhile
    slack = 2 * GIB
    assert fs.f_bavail * fs.f_frsize - slack <= pool["available"] <= fs.f_bfree * fs.f_frsize + slack
    assert abs(pool["allocation"] + pool["available"] - pool["capacity"]) <= slack
    backend = [
        p
        for p in libvirt_conn.listAllStoragePools(0)
        if ET.fromstring(p.XMLDesc(0)).findtext("target/path") == str(folder)
    ]
    assert len(backend) == 1 and backend[0].name().startswith("cloudlet-")
    assert backend[0].isActive() and backend[0].autostart()
    listing = _cli(sqlite_server, "storage", "pool", "list")
    assert listing.returncode == 0 and "default" in listing.stdout and "GiB" in listing.stdout


def test_a_volume_moves_its_data_between_attachments(
    sqlite_server: Server, vm: dict[str, Any], ssh_key: tuple[Path, str], libvirt_conn: Any
) -> None:
    key, _ = ssh_key
    ip = vm["ip"]
    with sqlite_server.client() as c:
        assert c.create_volume("data", 1)["status"] == "succeeded"
        data = c.volume("data")
        path = sqlite_server.data_dir / "volumes" / f"{data['id']}.qcow2"
        assert path.is_file() and data["allocation"] < 16 * 1024**2  # qcow2: allocated on write

        # hot-plug: the running guest sees a new 1 GiB disk carrying the volume's serial
        op = c.attach_volume("vols", "data")
        assert op["result"]["target"] == "vdc"
        disk = eventually(
            lambda: guest_disk(key, ip, data["serial"]), timeout=60, what="the hot-plugged disk"
        )
        assert sectors(key, ip, disk) == GIB // 512
        write_marker(key, ip, disk, "kept")
        assert c.volume("data")["attached_to"] == "vols"

        with pytest.raises(ApiError) as err:
            c.delete_volume("data")
        assert (err.value.status, err.value.code) == (409, "volume_in_use")
        out = _cli(sqlite_server, "volume", "delete", "data")
        assert out.returncode != 0 and "volume_in_use" in out.stderr

        # online grow: the guest sees the new size at once
        assert c.resize_volume("data", 2)["status"] == "succeeded"
        eventually(lambda: sectors(key, ip, disk) == 2 * GIB // 512, timeout=30, what="the grown disk")

        # live detach: the disk leaves the guest, the domain's definition and the VM's listing
        assert c.detach_volume("vols", "data")["status"] == "succeeded"
        eventually(lambda: guest_disk(key, ip, data["serial"]) == "", timeout=30, what="the disk to go")
        dom = libvirt_conn.lookupByName(f"cloudlet-{vm['id']}")
        assert str(path) not in dom.XMLDesc(0) and str(path) not in dom.XMLDesc(2)  # 2: inactive
        assert c.instance_volumes("vols") == []

        # cold attach through the CLI, then the restarted guest reads the marker back
        c.action("vols", "stop")
        out = _cli(sqlite_server, "vm", "volume", "attach", "vols", "data")
        assert out.returncode == 0, out.stderr
        assert "vdc" in out.stdout
        assert str(path) in dom.XMLDesc(2) and not dom.isActive()
        c.action("vols", "start")
        wait_guest_ssh(key, ip)
        disk = eventually(lambda: guest_disk(key, ip, data["serial"]), timeout=60, what="the attached disk")
        assert sectors(key, ip, disk) == 2 * GIB // 512
        assert read_marker(key, ip, disk) == "kept"
        listing = _cli(sqlite_server, "volume", "list")
        assert listing.returncode == 0 and "data" in listing.stdout and "vols" in listing.stdout

        # a VM snapshot covers its volumes: reverting takes the volume back too
        op = c.create_snapshot("vols", "withvol")
        assert op["status"] == "succeeded", op
        write_marker(key, ip, disk, "later")
        assert c.revert_snapshot("vols", "withvol")["status"] == "succeeded"
        wait_guest_ssh(key, ip)
        assert read_marker(key, ip, disk) == "kept"
        with pytest.raises(ApiError) as err:  # the snapshot recorded the disk: it stays while it exists
            c.detach_volume("vols", "data")
        assert (err.value.status, err.value.code) == (409, "instance_has_snapshots")
        assert c.delete_snapshot("vols", "withvol")["status"] == "succeeded"


def snapshots_in(path: Path) -> list[str]:
    """Names of the internal snapshots in a qcow2 file."""
    out = subprocess.run(
        ["qemu-img", "info", "--force-share", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [s["name"] for s in json.loads(out.stdout).get("snapshots", [])]


def test_deleting_the_vm_keeps_the_volume(sqlite_server: Server, vm: dict[str, Any]) -> None:
    with sqlite_server.client() as c:
        data = c.volume("data")
        assert data["attached_to"] == "vols"
        assert c.create_snapshot("vols", "last")["status"] == "succeeded"  # inside the volume too
        path = sqlite_server.data_dir / "volumes" / f"{data['id']}.qcow2"
        assert "last" not in snapshots_in(path)  # named by id: look for any
        assert snapshots_in(path)
        c.delete_instance("vols", force=True)
        assert snapshots_in(path) == []  # the VM's snapshots did not stay behind in the volume
        kept = c.volume("data")
        assert (kept["attached_to"], kept["target"], kept["status"]) == (None, None, "ready")
        assert path.is_file() and written_at(path, 100 * 1024**2)  # the marker's cluster is in it
        assert c.delete_volume("data")["status"] == "succeeded"
        assert not path.exists()
        assert c.volumes() == []


def test_a_netfs_pool_that_cannot_mount_leaves_nothing(sqlite_server: Server, libvirt_conn: Any) -> None:
    """No NFS server can run here (the kernel has neither nfsd nor the nfs client), so the real
    netfs path is the failure: libvirt cannot mount, and the pool is gone from libvirt and cloudlet."""
    mount = sqlite_server.data_dir / "nfs-mount"
    before = sorted(p.name() for p in libvirt_conn.listAllStoragePools(0))
    with sqlite_server.client() as c:
        op = c.create_storage_pool(
            "nfs1", str(mount), "netfs", source_host="127.0.0.1", source_path="/exports/none", wait=False
        )
        with pytest.raises(OperationFailed) as err:
            c.wait(op, timeout=120)
        assert err.value.code == "driver_error" and "storage pool" in err.value.detail
        assert [p["name"] for p in c.storage_pools()] == ["default"]
    assert sorted(p.name() for p in libvirt_conn.listAllStoragePools(0)) == before
