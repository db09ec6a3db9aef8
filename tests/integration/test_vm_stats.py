"""A real VM's metrics through the stats endpoint containers use (what the dashboard's Metrics
panel polls): its memory and vCPUs, CPU % within bounds, disk reads from its boot, counters that
only grow; the websocket and the CLI give the same; a stopped VM is a 409."""

from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect

from cloudlet.client import ApiError
from tests.helpers import eventually
from tests.integration.conftest import import_tiny, wait_guest_http
from tests.integration.test_events_and_cli import _cli

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
COUNTERS = ("network_rx_bytes", "network_tx_bytes", "block_read_bytes", "block_write_bytes")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ws_url(server, path: str) -> str:  # type: ignore[no-untyped-def]
    return server.url.replace("http", "ws", 1) + f"/api/v1{path}"


def test_stats_of_a_running_and_a_stopped_vm(sqlite_server, tiny_image) -> None:  # type: ignore[no-untyped-def]
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        op = c.create_instance(name="stats1", image="tiny", memory=128, disk=1, hostname="stats-host")
        assert op["status"] == "succeeded", op
        vm = c.instance("stats1")
        try:
            wait_guest_http(vm["ip"], "stats-host")  # booted, with some traffic on its NIC

            first = c.instance_stats("stats1")
            assert first["memory_limit_bytes"] == vm["memory"] * MIB == 128 * MIB
            assert first["memory_bytes"] > 0 and first["memory_percent"] > 0

            def guest_reported() -> bool:
                """The guest's balloon driver reports its own use (every few seconds): below its
                memory, unlike the QEMU process's resident size (QEMU's own memory included)."""
                sample = c.instance_stats("stats1")
                return 0 < sample["memory_bytes"] < sample["memory_limit_bytes"]

            eventually(guest_reported, timeout=30, interval=1, what="the guest's own memory report")
            assert 0 <= first["cpu_percent"] <= 100
            assert first["online_cpus"] == vm["cpus"] == 1
            assert first["pids"] == 0
            assert first["block_read_bytes"] > 0  # the kernel and its root file system came off vda
            for key in COUNTERS:
                assert isinstance(first[key], int) and first[key] >= 0, key
            assert first["network_rx_bytes"] + first["network_tx_bytes"] > 0  # DHCP and HTTP

            second = c.instance_stats("stats1")
            assert 0 <= second["cpu_percent"] <= 100
            assert second["read_at"] > first["read_at"]
            for key in COUNTERS:
                assert second[key] >= first[key], key

            url, auth = ws_url(sqlite_server, "/instances/stats1/stats/ws"), bearer(sqlite_server.token)
            with connect(url, additional_headers=auth, open_timeout=30) as ws:
                live = json.loads(ws.recv(timeout=30))
            assert live["memory_limit_bytes"] == 128 * MIB and live["online_cpus"] == 1
            assert all(live[key] >= second[key] for key in COUNTERS)

            out = _cli(sqlite_server, "vm", "stats", "stats1")
            assert out.returncode == 0, out.stderr
            assert "CPU %" in out.stdout and "128.0 MiB" in out.stdout

            assert c.action("stats1", "stop")["status"] == "succeeded"
            with pytest.raises(ApiError) as refused:
                c.instance_stats("stats1")
            assert refused.value.status == 409
            assert refused.value.problem["code"] == "instance_not_running"
            out = _cli(sqlite_server, "vm", "stats", "stats1")
            assert out.returncode != 0 and "instance_not_running" in out.stderr

            # Started again, it is measured afresh (its CPU counter went back to zero).
            assert c.action("stats1", "start")["status"] == "succeeded"
            again = eventually(
                lambda: c.instance_stats("stats1"), timeout=30, interval=1, what="stats after a restart"
            )
            assert 0 <= again["cpu_percent"] <= 100 and again["memory_limit_bytes"] == 128 * MIB
        finally:
            c.delete_instance("stats1", force=True)
