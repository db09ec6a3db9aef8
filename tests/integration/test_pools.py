"""Reservation pools on real VMs: the warm pool boots, a checkout gives a reachable VM, and a
reset on check-in means the next holder never sees the last one's files."""

from __future__ import annotations

import pytest

from tests.helpers import eventually
from tests.integration.conftest import import_tiny, ssh_run, wait_guest_ssh
from tests.integration.test_events_and_cli import _cli

pytestmark = pytest.mark.integration


def test_checkout_use_checkin_reset(sqlite_server, tiny_image, ssh_key):  # type: ignore[no-untyped-def]
    key, pub = ssh_key
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        seed = "#!/bin/sh\necho from-the-template > /root/seeded\n"
        template = {"image": "tiny", "memory": 128, "ssh_keys": [pub], "user_data": seed}
        body = {"name": "lab", "template": template, "min_ready": 1, "max_size": 1, "on_checkin": "reset"}
        c.request("POST", "/pools", json=body)
        eventually(
            lambda: c.request("GET", "/pools/lab")["counts"].get("available") == 1,
            timeout=120,
            interval=1,
            what="the warm pool to fill",
        )
        first = c.request("POST", "/pools/lab/checkout")
        wait_guest_ssh(key, first["ip"])
        seeded = eventually(
            lambda: (r := ssh_run(key, first["ip"], "cat", "/root/seeded")).returncode == 0 and r.stdout,
            timeout=60,
            interval=1,
            what="the template's user-data script to run",
        )
        assert seeded.strip() == "from-the-template"
        assert ssh_run(key, first["ip"], "sh", "-c", "echo secret > /root/mine && sync").returncode == 0
        c.request("POST", "/pools/lab/checkin", json={"ip": first["ip"]})

        eventually(
            lambda: (
                (p := c.request("GET", "/pools/lab"))["counts"].get("available") == 1
                and p["vms"][0]["instance_id"] != first["id"]
            ),
            timeout=180,
            interval=1,
            what="a fresh VM after the reset",
        )
        # the second holder works through the CLI
        out = _cli(sqlite_server, "pool", "checkout", "lab", "--lease", "600")
        assert out.returncode == 0, out.stderr
        ip = out.stdout.strip().splitlines()[-1]
        wait_guest_ssh(key, ip)
        gone = ssh_run(key, ip, "cat", "/root/mine")
        assert gone.returncode != 0, "the second holder sees the first holder's file"
        assert len(c.request("GET", "/pools/lab")["vms"]) == 1, "max_size passed"
        assert ip in _cli(sqlite_server, "pool", "leases").stdout
        assert _cli(sqlite_server, "pool", "extend", "lab", ip, "--seconds", "900").returncode == 0
        empty = _cli(sqlite_server, "pool", "checkout", "lab")
        assert empty.returncode == 2 and "pool_exhausted" in empty.stderr
        assert _cli(sqlite_server, "pool", "checkin", "lab", ip).returncode == 0
        history = _cli(sqlite_server, "pool", "history", "lab").stdout
        assert history.count("returned") == 2
        c.request("DELETE", "/pools/lab")
