"""cloud-init through the API on real VMs: a user-data script runs in the guest; a chosen address is
configured statically from the seed's network config (no DHCP client runs) while guest users, with
their password hashed, ride in a merged #cloud-config that still gives root its keys."""

from __future__ import annotations

import ipaddress

import pytest

from tests.integration.conftest import dhcp_macs, import_tiny, next_subnet, ssh_run, wait_guest_ssh
from tests.integration.test_events_and_cli import _cli

pytestmark = pytest.mark.integration


def guest(key, ip: str, command: str) -> str:  # type: ignore[no-untyped-def]
    out = ssh_run(key, ip, command)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_user_data_and_static_address(sqlite_server, tiny_image, ssh_key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    key, pub = ssh_key
    script = tmp_path / "user-data"
    script.write_text("#!/bin/sh\necho $((6 * 7)) > /run/answer\nhostname > /run/who\n")
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        network = ipaddress.ip_network(c.network("default")["cidr"])
        chosen = str(network.network_address + 50)
        out = _cli(
            sqlite_server,
            *("vm", "create", "ci-script", "--image", "tiny", "--memory", "128"),
            *("--ssh-key", pub, "--user-data", str(script)),
        )
        assert out.returncode == 0, out.stderr
        op = c.create_instance(
            name="ci-static",
            image="tiny",
            memory=128,
            ssh_keys=[pub],
            ip=chosen,
            static_ip=True,
            dns=["9.9.9.9"],
            users=[{"name": "alice", "password": "alice-secret", "sudo": True}],
        )
        assert op["status"] == "succeeded", op
        scripted, static = c.instance("ci-script")["ip"], c.instance("ci-static")["ip"]
        assert static == chosen

        wait_guest_ssh(key, scripted)
        assert guest(key, scripted, "cat /run/answer /run/who").split() == ["42", "ci-script"]
        assert guest(key, scripted, "cat /run/cloudlet/ip-mode") == "dhcp"

        assert wait_guest_ssh(key, static) == "ci-static"  # root's keys came through the merge
        assert guest(key, static, "cat /run/cloudlet/ip-mode") == "static"
        assert ssh_run(key, static, "pidof udhcpc").returncode != 0  # no DHCP client at all
        assert f"inet {chosen}/{network.prefixlen}" in guest(key, static, "ip -4 addr show eth0")
        assert guest(key, static, "ip route show default").startswith(
            f"default via {network.network_address + 1}"
        )
        assert guest(key, static, "cat /etc/resolv.conf") == "nameserver 9.9.9.9"
        user_data = guest(key, static, "cat /run/cidata/user-data")
        assert "name: alice" in user_data and "hashed_passwd: $6$" in user_data
        assert "alice-secret" not in user_data

        taken = c.http.post("/api/v1/instances", json={"name": "ci-dup", "image": "tiny", "ip": chosen})
        assert taken.status_code == 409 and taken.json()["code"] == "ip_taken"
        for name in ("ci-script", "ci-static"):
            c.delete_instance(name, force=True)


def test_two_nics_on_two_networks(sqlite_server, tiny_image, ssh_key, libvirt_conn) -> None:  # type: ignore[no-untyped-def]
    key, pub = ssh_key
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        back = c.create_network("backnet", next_subnet())
        assert back["status"] == "succeeded", back
        out = _cli(
            sqlite_server,
            *("vm", "create", "twonics", "--image", "tiny", "--memory", "128", "--ssh-key", pub),
            *("--nic", "default", "--nic", "backnet"),
        )
        assert out.returncode == 0, out.stderr
        vm = c.instance("twonics")
        assert [n["network"] for n in vm["nics"]] == ["default", "backnet"]
        wait_guest_ssh(key, vm["ip"])
        macs = guest(key, vm["ip"], "cat /sys/class/net/eth0/address /sys/class/net/eth1/address").split()
        assert macs == [n["mac"] for n in vm["nics"]]
        bridge = c.network("backnet")["bridge"]
        assert vm["nics"][1]["mac"] in dhcp_macs(libvirt_conn, bridge)
        c.delete_instance("twonics", force=True)
        assert vm["nics"][1]["mac"] not in dhcp_macs(libvirt_conn, bridge)
        c.delete_network("backnet")
