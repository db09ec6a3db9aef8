"""A running domain's resource use from one ``virConnectGetAllDomainStats``-style record.

The record comes from ``conn.domainListGetStats([dom], STATS_FLAGS)``: a flat dict of typed
parameters such as ``cpu.time`` (ns), ``balloon.current`` (KiB), ``vcpu.current``,
``net.<i>.rx.bytes`` and ``block.<i>.rd.bytes``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import libvirt

from cloudlet.drivers.base import InstanceStats

STATS_FLAGS = (
    libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)
KIB = 1024
FIRST_INTERVAL = 0.2  # seconds between the two samples of a first reading
MIN_INTERVAL = 0.1  # closer samples than this (two clients at once) reuse the last CPU %
MAX_AGE = 30.0  # an older previous sample is not used: CPU % would average over too long


def _int(record: Mapping[str, Any], key: str) -> int:
    value = record.get(key)
    return int(value) if value is not None else 0


def _sum(record: Mapping[str, Any], prefix: str, suffix: str) -> int:
    """Sum ``<prefix>.<i>.<suffix>`` over ``<prefix>.count`` devices."""
    return sum(_int(record, f"{prefix}.{i}.{suffix}") for i in range(_int(record, f"{prefix}.count")))


def memory_of(record: Mapping[str, Any]) -> tuple[int, int]:
    """(used bytes, limit bytes). The limit is the guest's memory now (``balloon.current``, plugged
    DIMMs included; else ``balloon.maximum``). Used is what the guest itself reports when it has
    a balloon device and driver with statistics (``available - usable``, else ``available -
    unused``: without the page cache, as ``docker stats`` shows); cloudlet defines VMs with a
    balloon that reports every few seconds. Otherwise (older definitions, a guest without the
    driver, the first seconds of a boot) it is the host's view: the resident memory of the QEMU process
    (``balloon.rss``), which counts the guest pages it touched plus QEMU's own memory, so it can
    pass the limit (under TCG by a lot): it is not capped, a capped figure would show every small
    VM at 100 %."""
    limit = (_int(record, "balloon.current") or _int(record, "balloon.maximum")) * KIB
    available = _int(record, "balloon.available")
    if available and "balloon.usable" in record:
        used = available - _int(record, "balloon.usable")
    elif available and "balloon.unused" in record:
        used = available - _int(record, "balloon.unused")
    else:
        used = _int(record, "balloon.rss")
    return max(used, 0) * KIB, limit


def parse(record: Mapping[str, Any], cpu_percent: float, read_at: datetime) -> InstanceStats:
    """The neutral sample of one stats record (CPU % is measured by the caller over two records)."""
    memory, limit = memory_of(record)
    return InstanceStats(
        cpu_percent=cpu_percent,
        online_cpus=_int(record, "vcpu.current") or 1,
        memory_bytes=memory,
        memory_limit_bytes=limit,
        network_rx_bytes=_sum(record, "net", "rx.bytes"),
        network_tx_bytes=_sum(record, "net", "tx.bytes"),
        block_read_bytes=_sum(record, "block", "rd.bytes"),
        block_write_bytes=_sum(record, "block", "wr.bytes"),
        pids=0,
        read_at=read_at,
    )


def cpu_percent(cpu_ns: int, previous_ns: int, seconds: float, vcpus: int) -> float:
    """CPU time used in ``seconds`` as a percent of all ``vcpus`` (100 = every vCPU busy the whole
    time), clamped to [0, 100]: ``cpu.time`` also counts QEMU's emulator and I/O threads."""
    if seconds <= 0:
        return 0.0
    percent = 100.0 * (cpu_ns - previous_ns) / (seconds * 1e9 * max(vcpus, 1))
    return round(min(max(percent, 0.0), 100.0), 2)


@dataclass
class _Sample:
    at: float  # time.monotonic()
    cpu_ns: int
    percent: float


class CpuMeter:
    """CPU % per domain from the previous reading of its ``cpu.time``: each call measures over the
    time since the last one (a dashboard polling every 2 s gets the use over those 2 s). A first
    reading, one after ``MAX_AGE`` or after the domain restarted takes two records
    ``FIRST_INTERVAL`` apart."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, _Sample] = {}
        self._sleep = sleep

    def measure(self, key: str, read: Callable[[], Mapping[str, Any]]) -> tuple[Mapping[str, Any], float]:
        """The latest record from ``read`` and the CPU % up to it."""
        record = read()
        now = time.monotonic()
        cpu_ns = _int(record, "cpu.time")
        vcpus = _int(record, "vcpu.current") or 1
        with self._lock:
            prev = self._last.get(key)
        if prev is not None and cpu_ns >= prev.cpu_ns and now - prev.at < MIN_INTERVAL:
            return record, prev.percent
        if prev is None or cpu_ns < prev.cpu_ns or now - prev.at > MAX_AGE:
            prev = _Sample(now, cpu_ns, 0.0)
            self._sleep(FIRST_INTERVAL)
            record = read()
            now = time.monotonic()
            cpu_ns = _int(record, "cpu.time")
        percent = cpu_percent(cpu_ns, prev.cpu_ns, now - prev.at, vcpus)
        with self._lock:
            self._last[key] = _Sample(now, cpu_ns, percent)
        return record, percent

    def forget(self, key: str) -> None:
        with self._lock:
            self._last.pop(key, None)
