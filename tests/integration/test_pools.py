"""Reservation pools on real VMs: the warm pool boots, a checkout gives a reachable VM, and a
reset on check-in means the next holder never sees the last one's files."""

from __future__ import annotations

import pytest

from tests.helpers import eventually
from tests.integration.conftest import import_tiny, ssh_run, wait_guest_ssh

pytestmark = pytest.mark.integration


def test_checkout_use_checkin_reset(sqlite_server, tiny_image, ssh_key):  # type: ignore[no-untyped-def]
    key, pub = ssh_key
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        template = {"image": "tiny", "memory": 128, "ssh_keys": [pub]}
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
        second = c.request("POST", "/pools/lab/checkout")
        wait_guest_ssh(key, second["ip"])
        gone = ssh_run(key, second["ip"], "cat", "/root/mine")
        assert gone.returncode != 0, "the second holder sees the first holder's file"
        assert len(c.request("GET", "/pools/lab")["vms"]) == 1, "max_size passed"
        c.request("POST", "/pools/lab/checkin", json={"id": second["id"]})
        c.request("DELETE", "/pools/lab")
