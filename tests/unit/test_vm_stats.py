"""VM metrics through the stats endpoint containers use: the route's answers on the simulated
driver, and the libvirt driver's arithmetic on stats records (the real numbers are proven in
tests/integration/test_vm_stats.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from cloudlet.drivers.libvirt import stats
from cloudlet.errors import InvalidState
from tests.unit.conftest import SimCloud

FIELDS = {
    "cpu_percent",
    "online_cpus",
    "memory_bytes",
    "memory_limit_bytes",
    "memory_percent",
    "network_rx_bytes",
    "network_tx_bytes",
    "block_read_bytes",
    "block_write_bytes",
    "pids",
    "read_at",
}

# -- the route on the simulated driver --------------------------------------------------------------


def test_a_running_vm_answers_with_the_container_shape(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    assert create_vm("web", cpus=2, memory=256).json()["status"] == "succeeded"
    first = sim.get("/api/v1/instances/web/stats")
    assert first.status_code == 200, first.text
    s = first.json()
    assert set(s) == FIELDS
    assert s["online_cpus"] == 2 and s["pids"] == 0
    assert s["memory_limit_bytes"] == 256 * 1024 * 1024
    assert 0 < s["memory_bytes"] <= s["memory_limit_bytes"]
    assert s["memory_percent"] == round(100 * s["memory_bytes"] / s["memory_limit_bytes"], 2)
    assert 0 <= s["cpu_percent"] <= 100
    second = sim.get("/api/v1/instances/web/stats").json()
    for key in ("network_rx_bytes", "network_tx_bytes", "block_read_bytes", "block_write_bytes"):
        assert second[key] >= s[key], key
    assert second["read_at"] > s["read_at"]


def test_the_sim_numbers_move_with_time(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    vm_id = create_vm("web").json()["target_id"]
    before = sim.driver.stats(vm_id)
    sim.driver.started_at[vm_id] -= 10.0  # as if it had run 10 s longer
    after = sim.driver.stats(vm_id)
    assert after.network_rx_bytes > before.network_rx_bytes
    assert after.block_write_bytes > before.block_write_bytes
    assert after.cpu_percent != before.cpu_percent


def test_a_stopped_vm_is_409_and_unknown_is_404(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("web")
    assert sim.post("/api/v1/instances/web/actions/stop", params={"wait": 10}).status_code == 200
    resp = sim.get("/api/v1/instances/web/stats")
    assert resp.status_code == 409 and resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == "instance_not_running" and resp.json()["state"] == "stopped"
    assert sim.get("/api/v1/instances/nope/stats").json()["code"] == "instance_not_found"
    url = "/api/v1/instances/web/stats/ws"
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        sim.client.websocket_connect(url, headers=sim.headers) as ws,
    ):
        ws.receive_text()
    assert refused.value.code == 4409


def test_the_driver_refuses_a_stopped_vm_too(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    """The race where it stops between the route's check and the driver's read."""
    vm_id = create_vm("web").json()["target_id"]
    sim.driver.stop(vm_id)
    with pytest.raises(InvalidState) as err:
        sim.driver.stats(vm_id)
    assert err.value.code == "instance_not_running"


def test_live_stats_of_a_vm_until_it_stops(sim: SimCloud, create_vm, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from cloudlet.api.routers import containers

    monkeypatch.setattr(containers, "VM_STATS_INTERVAL", 0.01)
    create_vm("web")
    with sim.client.websocket_connect("/api/v1/instances/web/stats/ws", headers=sim.headers) as ws:
        samples = [json.loads(ws.receive_text()) for _ in range(3)]
        assert all(set(s) == FIELDS for s in samples)
        assert samples[2]["network_rx_bytes"] >= samples[0]["network_rx_bytes"]
        sim.post("/api/v1/instances/web/actions/stop", params={"wait": 10})
        while True:  # samples taken before the stop may still come
            message = ws.receive()
            if message["type"] == "websocket.close":
                break
        assert message["code"] == 1000


def test_viewers_may_read_vm_stats(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.test_tenancy import add_member, bearer, login, make_user

    create_vm("web")
    make_user(sim, "vera")
    add_member(sim, "vera", "viewer")
    viewer = bearer(login(sim, "vera")["access_token"])
    assert sim.client.get("/api/v1/instances/web/stats", headers=viewer).status_code == 200


# -- the libvirt driver's arithmetic -----------------------------------------------------------------

RECORD: dict[str, Any] = {
    "state.state": 1,
    "cpu.time": 5_000_000_000,
    "balloon.current": 262144,
    "balloon.maximum": 262144,
    "balloon.rss": 180000,
    "vcpu.current": 2,
    "vcpu.maximum": 8,
    "net.count": 2,
    "net.0.rx.bytes": 1000,
    "net.0.tx.bytes": 200,
    "net.1.rx.bytes": 30,
    "net.1.tx.bytes": 4,
    "block.count": 2,
    "block.0.name": "vda",
    "block.0.rd.bytes": 5_000_000,
    "block.0.wr.bytes": 70_000,
    "block.1.name": "vdb",
    "block.1.rd.bytes": 300_000,
    "block.1.wr.bytes": 0,
}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_record_is_summed_over_interfaces_and_disks() -> None:
    s = stats.parse(RECORD, 12.5, NOW)
    assert (s.network_rx_bytes, s.network_tx_bytes) == (1030, 204)
    assert (s.block_read_bytes, s.block_write_bytes) == (5_300_000, 70_000)
    assert s.online_cpus == 2 and s.pids == 0 and s.cpu_percent == 12.5 and s.read_at == NOW
    assert s.memory_limit_bytes == 256 * 1024 * 1024
    assert s.memory_bytes == 180000 * 1024  # no guest statistics: the QEMU process's RSS


def test_memory_the_guest_reports_wins_over_the_host_view() -> None:
    guest = {**RECORD, "balloon.available": 250000, "balloon.unused": 150000}
    assert stats.memory_of(guest) == (100000 * 1024, 262144 * 1024)
    assert stats.memory_of({**guest, "balloon.usable": 200000})[0] == 50000 * 1024
    assert stats.memory_of({**RECORD, "balloon.rss": 400000})[0] == 400000 * 1024  # QEMU's own too
    assert stats.memory_of({"balloon.maximum": 1024}) == (0, 1024 * 1024)


def test_a_record_without_devices_has_zero_counters() -> None:
    s = stats.parse({"cpu.time": 1, "balloon.current": 1024}, 0.0, NOW)
    assert (s.network_rx_bytes, s.block_read_bytes, s.online_cpus) == (0, 0, 1)


def test_cpu_percent_is_of_all_vcpus_and_clamped() -> None:
    assert stats.cpu_percent(1_500_000_000, 500_000_000, 2.0, 1) == 50.0
    assert stats.cpu_percent(1_500_000_000, 500_000_000, 2.0, 2) == 25.0
    assert stats.cpu_percent(9_000_000_000, 0, 1.0, 2) == 100.0  # emulator threads on top
    assert stats.cpu_percent(0, 10, 1.0, 1) == 0.0
    assert stats.cpu_percent(10, 0, 0.0, 1) == 0.0


class Records:
    """Stats records whose ``cpu.time`` follows a fake clock: ``busy`` vCPUs at full use."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, busy: float, vcpus: int = 2) -> None:
        self.now = 1000.0
        self.cpu_ns = 0
        self.busy = busy
        self.vcpus = vcpus
        self.reads = 0
        monkeypatch.setattr(stats.time, "monotonic", lambda: self.now)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.cpu_ns += int(seconds * 1e9 * self.busy)

    def read(self) -> Mapping[str, Any]:
        self.reads += 1
        return {"cpu.time": self.cpu_ns, "vcpu.current": self.vcpus}


def test_the_meter_reads_twice_first_then_measures_since_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    records = Records(monkeypatch, busy=1.0)
    meter = stats.CpuMeter(sleep=records.sleep)
    assert meter.measure("vm", records.read)[1] == 50.0  # one of two vCPUs busy
    assert records.reads == 2 and records.now == 1000.0 + stats.FIRST_INTERVAL
    records.busy = 2.0
    records.advance(2.0)
    assert meter.measure("vm", records.read)[1] == 100.0
    assert records.reads == 3  # one record: the previous one is the first sample
    records.busy = 0.0
    records.advance(0.01)  # a second client right after: the same figure, no new measurement
    assert meter.measure("vm", records.read)[1] == 100.0
    records.advance(2.0)
    assert meter.measure("vm", records.read)[1] == 0.0


def test_the_meter_starts_over_after_a_restart_or_a_long_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    records = Records(monkeypatch, busy=0.5, vcpus=1)
    meter = stats.CpuMeter(sleep=records.sleep)
    meter.measure("vm", records.read)
    records.advance(1.0)
    records.cpu_ns = 0  # the domain restarted: its counter went back
    reads = records.reads
    assert meter.measure("vm", records.read)[1] == 50.0 and records.reads == reads + 2
    records.advance(stats.MAX_AGE + 1)
    reads = records.reads
    assert meter.measure("vm", records.read)[1] == 50.0 and records.reads == reads + 2
    meter.forget("vm")
    reads = records.reads
    meter.measure("vm", records.read)
    assert records.reads == reads + 2
