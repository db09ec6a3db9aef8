"""A real VM's whole life, on SQLite and on PostgreSQL: create -> running -> its HTTP answers its
hostname at the allocated IP -> SSH with the injected key -> stop -> start -> delete, and then
nothing is left: no domain, disk, seed ISO, DHCP entry or IP allocation."""

from __future__ import annotations

import pytest

from tests.helpers import eventually
from tests.integration.conftest import (
    dhcp_macs,
    domain_exists,
    import_tiny,
    ssh_run,
    wait_guest_http,
    wait_guest_ssh,
)

pytestmark = pytest.mark.integration


def test_vm_life_cycle(server, libvirt_conn, tiny_image, ssh_key) -> None:  # type: ignore[no-untyped-def]
    key, pub = ssh_key
    with server.client() as c:
        import_tiny(c, tiny_image)
        default = c.network("default")
        c.create_instance(
            name="life1", image="tiny", memory=128, disk=2, hostname="life-host", ssh_keys=[pub]
        )
        vm = c.instance("life1")
        assert vm["state"] == "running"
        assert vm["ip"] and vm["ip"].startswith(server.cidr.rsplit(".", 1)[0])
        assert vm["mac"] in dhcp_macs(libvirt_conn, default["bridge"])
        assert c.network("default")["addresses_used"] == default["addresses_used"] + 1
        folder = server.data_dir / "instances" / vm["id"]
        assert (folder / "disk.qcow2").is_file() and (folder / "seed.iso").is_file()

        wait_guest_http(vm["ip"], "life-host")
        assert wait_guest_ssh(key, vm["ip"]) == "life-host"
        # The 2 GiB disk is a linked clone grown past the image: the guest sees 2 GiB.
        size = ssh_run(key, vm["ip"], "cat", "/sys/block/vda/size")
        assert int(size.stdout) * 512 == 2 * 1024**3

        uptime_before = float(ssh_run(key, vm["ip"], "cut", "-d.", "-f1", "/proc/uptime").stdout)
        c.action("life1", "reboot")

        def rebooted() -> bool:
            # The reboot is asked of the guest (ACPI): SSH may still answer for a moment before it
            # goes down, and fail while it comes back, so read the uptime until it has restarted.
            up = ssh_run(key, vm["ip"], "cut", "-d.", "-f1", "/proc/uptime").stdout.strip()
            return up.isdigit() and (int(up) < uptime_before or int(up) < 30)

        eventually(rebooted, timeout=180, interval=2, what="the guest to come back from its reboot")

        c.action("life1", "stop")
        assert c.instance("life1")["state"] == "stopped"
        assert not libvirt_conn.lookupByName(f"cloudlet-{vm['id']}").isActive()

        c.action("life1", "start")
        assert c.instance("life1")["state"] == "running"
        wait_guest_http(vm["ip"], "life-host")
        assert c.instance("life1")["ip"] == vm["ip"], "the address survives a restart"

        c.delete_instance("life1", force=True)
        assert all(v["name"] != "life1" for v in c.instances())
        assert not domain_exists(libvirt_conn, vm["id"])
        assert not folder.exists()
        assert vm["mac"] not in dhcp_macs(libvirt_conn, default["bridge"])
        assert c.network("default")["addresses_used"] == default["addresses_used"]
