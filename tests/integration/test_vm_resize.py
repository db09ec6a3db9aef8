"""Resizing a real VM: its disk grows and a vCPU and memory are plugged in while it runs, and the
guest sees them at once (online); after a stop, fewer vCPUs and less memory (through the CLI) are
what the guest counts when it boots again."""

from __future__ import annotations

import pytest

from tests.helpers import eventually
from tests.integration.conftest import import_tiny, ssh_run, wait_guest_ssh
from tests.integration.test_events_and_cli import _cli

pytestmark = pytest.mark.integration
GIB = 1024**3


def guest_size(key, ip: str) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """(CPUs, MemTotal in MiB, disk bytes) as the guest sees them."""
    # one string: ssh hands it to the guest's shell as it is
    out = ssh_run(
        key, ip, "grep -c ^processor /proc/cpuinfo; grep MemTotal /proc/meminfo; cat /sys/block/vda/size"
    )
    assert out.returncode == 0, out.stderr
    cpus, mem, sectors = out.stdout.split("\n")[:3]
    return int(cpus), int(mem.split()[1]) // 1024, int(sectors) * 512


def test_resize_seen_by_the_guest(sqlite_server, tiny_image, ssh_key) -> None:  # type: ignore[no-untyped-def]
    key, pub = ssh_key
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        c.create_instance(name="grow1", image="tiny", memory=256, disk=1, ssh_keys=[pub])
        ip = c.instance("grow1")["ip"]
        wait_guest_ssh(key, ip)
        cpus, mem, disk = guest_size(key, ip)
        assert (cpus, disk) == (1, GIB) and 120 < mem <= 256  # the room to grow costs the kernel some

        # online: the running guest sees its disk grow
        op = c.resize_instance("grow1", disk=2)
        assert op["status"] == "succeeded", op
        eventually(
            lambda: guest_size(key, ip)[2] == 2 * GIB, timeout=30, interval=1, what="the new disk size"
        )
        assert c.instance("grow1")["disk"] == 2

        op = c.resize_instance("grow1", cpus=2, memory=384)  # plugged in: the guest onlines them itself
        assert op["status"] == "succeeded", op
        eventually(lambda: guest_size(key, ip)[0] == 2, timeout=30, interval=1, what="the new vCPU online")
        eventually(lambda: guest_size(key, ip)[1] >= mem + 120, timeout=30, interval=1, what="the new memory")
        step = _cli(sqlite_server, "vm", "resize", "grow1", "--memory", "400")
        assert step.returncode != 0 and "memory_step" in step.stderr  # whole 128 MiB blocks only

        c.action("grow1", "stop")
        out = _cli(sqlite_server, "vm", "resize", "grow1", "--cpus", "1", "--memory", "320")
        assert out.returncode == 0, out.stderr
        refused = _cli(sqlite_server, "vm", "resize", "grow1", "--disk", "1")
        assert refused.returncode != 0 and "disk_shrink" in refused.stderr
        c.action("grow1", "start")
        wait_guest_ssh(key, ip)
        cpus, mem, disk = guest_size(key, ip)
        assert cpus == 1 and 180 < mem <= 320 and disk == 2 * GIB
        vm = c.instance("grow1")
        assert (vm["cpus"], vm["memory"], vm["disk"]) == (1, 320, 2)
        c.delete_instance("grow1", force=True)
