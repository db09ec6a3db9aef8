"""The pure parts of the Docker driver: stats arithmetic, error mapping, port bindings, and the
operation log store that build output goes to."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests

from cloudlet.drivers.base import PortSpec
from cloudlet.drivers.docker.driver import parse_ports, port_bindings
from cloudlet.drivers.docker.errors import registry_error, translate
from cloudlet.drivers.docker.stats import parse_stats
from cloudlet.errors import Conflict, DriverUnavailable, InUse, Invalid, NotFound, RegistryUnreachable
from cloudlet.services.events import EventBus
from cloudlet.services.oplogs import OperationLogs

V1_SAMPLE: dict[str, Any] = {
    "read": "2026-11-23T10:00:01.123456789Z",
    "cpu_stats": {
        "cpu_usage": {"total_usage": 3_000_000_000},
        "system_cpu_usage": 20_000_000_000,
        "online_cpus": 2,
    },
    "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}, "system_cpu_usage": 18_000_000_000},
    "memory_stats": {"usage": 50 * 2**20, "limit": 100 * 2**20, "stats": {"total_inactive_file": 10 * 2**20}},
    "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 50}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
    "blkio_stats": {
        "io_service_bytes_recursive": [{"op": "Read", "value": 4096}, {"op": "Write", "value": 8192}]
    },
    "pids_stats": {"current": 3},
}


def test_stats_match_what_docker_stats_shows() -> None:
    s = parse_stats(V1_SAMPLE)
    # 1e9 ns of container CPU over 2e9 ns of system time on 2 CPUs: one CPU busy = 100 %
    assert s.cpu_percent == 100.0 and s.online_cpus == 2
    assert s.memory_bytes == 40 * 2**20 and s.memory_limit_bytes == 100 * 2**20
    assert (s.network_rx_bytes, s.network_tx_bytes) == (101, 52)
    assert (s.block_read_bytes, s.block_write_bytes) == (4096, 8192)
    assert s.pids == 3 and s.read_at.microsecond == 123456


def test_stats_of_cgroup_v2_and_a_first_sample() -> None:
    raw = {**V1_SAMPLE, "memory_stats": {"usage": 30, "limit": 100, "stats": {"inactive_file": 10}}}
    raw["precpu_stats"] = {}  # the first sample of a stream has no previous reading
    s = parse_stats(raw)
    assert s.memory_bytes == 20
    # the engine's first sample: the totals themselves are the deltas (3e9 of 20e9 ns on 2 CPUs)
    assert s.cpu_percent == 30.0
    idle = parse_stats({**V1_SAMPLE, "precpu_stats": V1_SAMPLE["cpu_stats"]})
    assert idle.cpu_percent == 0.0  # no time passed: no division by zero


def _api_error(status: int, message: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(message, response=response, explanation=message)


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (
            _api_error(409, "conflict: unable to remove repository reference (image is being used by x)"),
            InUse,
            "image_in_use",
        ),
        (_api_error(409, "Conflict. The container name is already in use"), Conflict, "backend_conflict"),
        (
            _api_error(500, "driver failed: Bind for 0.0.0.0:80 failed: port is already allocated"),
            Conflict,
            "port_in_use",
        ),
        (_api_error(400, "invalid reference format"), Invalid, "backend_rejected"),
        (requests.exceptions.ConnectionError("refused"), DriverUnavailable, "driver_unavailable"),
    ],
)
def test_engine_errors_map_to_domain_errors(error: Exception, kind: type, code: str) -> None:
    mapped = translate(error, "doing it")
    assert isinstance(mapped, kind) and mapped.code == code  # type: ignore[attr-defined]


def test_not_found_errors() -> None:
    response = requests.Response()
    response.status_code = 404
    assert isinstance(translate(docker.errors.ImageNotFound("x", response=response), "x"), Invalid)
    assert isinstance(translate(docker.errors.NotFound("x", response=response), "x"), NotFound)


def test_registry_failures_are_502_registry_unreachable() -> None:
    offline = _api_error(
        500, 'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host'
    )
    assert isinstance(registry_error(offline, "pulling"), RegistryUnreachable)
    assert registry_error(offline, "pulling").status == 502  # type: ignore[attr-defined]
    missing = _api_error(404, "manifest for x:1 not found")
    assert not isinstance(registry_error(missing, "pulling"), RegistryUnreachable)


def test_port_bindings_round_trip() -> None:
    ports = (PortSpec(8080, 80), PortSpec(8081, 80), PortSpec(53, 53, "udp", "127.0.0.1"))
    bindings = port_bindings(ports)
    assert bindings == {"80/tcp": [("", 8080), ("", 8081)], "53/udp": [("127.0.0.1", 53)]}
    engine_view = {k: [{"HostIp": ip, "HostPort": str(p)} for ip, p in v] for k, v in bindings.items()}
    assert set(parse_ports(engine_view)) == set(ports)


def test_operation_logs_stream_live_and_end(tmp_path: Path) -> None:
    logs = OperationLogs(tmp_path, EventBus())
    writer = logs.writer("op1", "ws")
    writer("line 1")
    done = threading.Event()
    got: list[bytes] = []

    ended = threading.Event()  # the operation's status, as the database would say it

    def follow() -> None:
        got.extend(logs.read("op1", follow=True, is_final=ended.is_set))
        done.set()

    reader = threading.Thread(target=follow)
    reader.start()
    writer("line 2")
    assert not done.wait(0.3), "the follower must wait for more while the operation runs"
    ended.set()
    writer.close()  # wakes the follower, which sees the operation final and stops
    assert done.wait(5)
    assert b"".join(got) == b"line 1\nline 2\n"
    assert b"".join(logs.read("op1", follow=False, is_final=lambda: True)) == b"line 1\nline 2\n"
