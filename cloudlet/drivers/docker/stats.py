"""Turn the Engine's stats JSON into the numbers `docker stats` shows (cgroup v1 and v2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cloudlet.drivers.containers import ContainerStats


def _parse_time(value: str | None) -> datetime:
    if not value or value.startswith("0001-"):
        return datetime.now(UTC)
    # Docker gives nanoseconds; Python takes microseconds.
    head, _, rest = value.partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())[:6]
    return datetime.fromisoformat(f"{head}.{fraction or '0'}+00:00")


def memory_without_cache(memory: dict[str, Any]) -> int:
    """Usage less the inactive page cache, as the docker CLI computes it."""
    usage = int(memory.get("usage") or 0)
    stats = memory.get("stats") or {}
    if "total_inactive_file" in stats:  # cgroup v1
        cache = int(stats["total_inactive_file"])
    elif "inactive_file" in stats:  # cgroup v2
        cache = int(stats["inactive_file"])
    else:
        cache = int(stats.get("cache", 0))
    return max(usage - cache, 0)


def cpu_percent(raw: dict[str, Any]) -> tuple[float, int]:
    cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    online = int(cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1)
    cpu_delta = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get(
        "total_usage", 0
    )
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    if cpu_delta <= 0 or system_delta <= 0:
        return 0.0, online
    return round(cpu_delta / system_delta * online * 100.0, 2), online


def parse_stats(raw: dict[str, Any]) -> ContainerStats:
    percent, online = cpu_percent(raw)
    memory = raw.get("memory_stats") or {}
    rx = tx = 0
    for net in (raw.get("networks") or {}).values():
        rx += int(net.get("rx_bytes", 0))
        tx += int(net.get("tx_bytes", 0))
    read = write = 0
    for entry in (raw.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(entry.get("op", "")).lower()
        if op == "read":
            read += int(entry.get("value", 0))
        elif op == "write":
            write += int(entry.get("value", 0))
    return ContainerStats(
        cpu_percent=percent,
        online_cpus=online,
        memory_bytes=memory_without_cache(memory),
        memory_limit_bytes=int(memory.get("limit") or 0),
        network_rx_bytes=rx,
        network_tx_bytes=tx,
        block_read_bytes=read,
        block_write_bytes=write,
        pids=int((raw.get("pids_stats") or {}).get("current") or 0),
        read_at=_parse_time(raw.get("read")),
    )
