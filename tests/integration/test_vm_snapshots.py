"""Snapshots of a real VM. The tiny guest lives in RAM, so what it writes to its disk goes straight
to the block device (markers at fixed offsets, past its boot partition).

A running VM's snapshot keeps memory and disk: reverting brings the guest back as it was, without
a marker written after the snapshot (on disk) or a file made after it (in RAM). A stopped VM's
disk-only snapshot, through the CLI, leaves it stopped after a revert and loses the later marker."""

from __future__ import annotations

import pytest

from tests.integration.conftest import import_tiny, ssh_run, wait_guest_ssh
from tests.integration.test_events_and_cli import _cli

pytestmark = pytest.mark.integration


def write_marker(key, ip: str, mib: int, text: str) -> None:  # type: ignore[no-untyped-def]
    out = ssh_run(key, ip, f"echo {text} | dd of=/dev/vda bs=1M seek={mib} conv=fsync 2>/dev/null")
    assert out.returncode == 0, out.stderr


def read_marker(key, ip: str, mib: int) -> str:  # type: ignore[no-untyped-def]
    out = ssh_run(
        key, ip, f"dd if=/dev/vda bs=1M skip={mib} count=1 2>/dev/null | head -c 16 | tr -d '\\000\\n'"
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


GIB = 1024**3


def disk_bytes(key, ip: str) -> int:  # type: ignore[no-untyped-def]
    """The size of the guest's disk as its kernel sees it."""
    return int(ssh_run(key, ip, "cat /sys/block/vda/size").stdout) * 512


def test_snapshot_revert_loses_later_writes(sqlite_server, tiny_image, ssh_key) -> None:  # type: ignore[no-untyped-def]
    key, pub = ssh_key
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        c.create_instance(name="snap1", image="tiny", memory=128, ssh_keys=[pub])
        ip = c.instance("snap1")["ip"]
        wait_guest_ssh(key, ip)
        write_marker(key, ip, 512, "one")
        assert ssh_run(key, ip, "touch /root/before").returncode == 0

        op = c.create_snapshot("snap1", "live", "running, with memory")
        assert op["status"] == "succeeded" and op["result"]["with_memory"], op
        write_marker(key, ip, 600, "two")
        assert ssh_run(key, ip, "touch /root/after").returncode == 0
        assert read_marker(key, ip, 600) == "two"

        assert c.revert_snapshot("snap1", "live")["status"] == "succeeded"
        assert c.instance("snap1")["state"] == "running"
        wait_guest_ssh(key, ip)
        assert (read_marker(key, ip, 512), read_marker(key, ip, 600)) == ("one", "")
        assert ssh_run(key, ip, "ls /root").stdout.split() == ["before"]  # memory came back too

        c.action("snap1", "stop")
        out = _cli(sqlite_server, "vm", "snapshot", "create", "snap1", "cold")
        assert out.returncode == 0, out.stderr
        listing = _cli(sqlite_server, "vm", "snapshot", "list", "snap1")
        assert "live" in listing.stdout and "cold" in listing.stdout
        c.action("snap1", "start")
        wait_guest_ssh(key, ip)
        write_marker(key, ip, 700, "three")
        disk = c.instance("snap1")["disk"]
        assert c.resize_instance("snap1", disk=disk + 1)["status"] == "succeeded"  # grown online
        assert disk_bytes(key, ip) == (disk + 1) * GIB
        out = _cli(sqlite_server, "vm", "snapshot", "revert", "snap1", "cold")
        assert out.returncode == 0, out.stderr
        assert c.instance("snap1")["state"] == "stopped"
        assert c.instance("snap1")["disk"] == disk  # the disk is back at its size then, and so is the record
        c.action("snap1", "start")
        wait_guest_ssh(key, ip)
        assert (read_marker(key, ip, 512), read_marker(key, ip, 700)) == ("one", "")
        assert disk_bytes(key, ip) == disk * GIB

        assert c.delete_snapshot("snap1", "live")["status"] == "succeeded"
        assert [x["name"] for x in c.snapshots("snap1")] == ["cold"]
        c.delete_instance("snap1", force=True)  # its last snapshot goes with its disk
