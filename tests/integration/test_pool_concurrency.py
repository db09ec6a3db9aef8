"""Reservation pools under load on real VMs, with SQLite and PostgreSQL: 64 simultaneous checkouts
against 10 ready VMs give out each VM exactly once and turn the rest away with a clean 409; an
expired lease is warned about first, then ended by the controller, and (on_checkin reset) the VM
is replaced by a fresh one without the pool ever passing max_size."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from cloudlet.client import Client
from tests.integration.conftest import Server, import_tiny, running_server, traversable_tmp, wait_guest_http

pytestmark = pytest.mark.integration

EXHAUSTED_DETAIL = "No VMs currently available, please try after some time"


class SizeWatch:
    """Samples GET /pools/{name} every second, on a client of its own, from start to stop, and
    keeps the largest number of VMs seen and every VM id seen with its statuses."""

    def __init__(self, server: Server, pool: str) -> None:
        self.server, self.pool = server, pool
        self.largest = 0
        self.samples = 0
        self.errors: list[str] = []
        self.statuses: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{pool}", daemon=True)

    def __enter__(self) -> SizeWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with self.server.client() as c:
            while not self._stop.is_set():
                try:
                    vms = c.request("GET", f"/pools/{self.pool}")["vms"]
                except Exception as exc:  # noted, not fatal: the sampling goes on
                    self.errors.append(repr(exc))
                else:
                    self.samples += 1
                    self.largest = max(self.largest, len(vms))
                    for vm in vms:
                        seen = self.statuses.setdefault(vm["instance_id"], [])
                        if not seen or seen[-1] != vm["status"]:
                            seen.append(vm["status"])
                self._stop.wait(1)


def wait_pool(c: Client, pool: str, done: Any, *, timeout: float, what: str) -> dict[str, Any]:
    """Poll the pool every second until ``done(pool)``; fail showing the last state."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = c.request("GET", f"/pools/{pool}")
            if done(last):
                return last  # type: ignore[no-any-return]
        except Exception as exc:
            last = exc
        time.sleep(1)
    state = last if isinstance(last, Exception) else {"counts": last["counts"], "vms": last["vms"]}
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {state!r}")


def assert_clean_log(server: Server) -> None:
    """The server logged no traceback (a failed controller pass, an unexpected 500)."""
    text = server.log.read_text(errors="replace")
    assert "Traceback" not in text, text[text.index("Traceback") - 500 :][:4000]


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_64_parallel_checkouts_against_10_ready_vms(db, libvirt_conn, tiny_image):  # type: ignore[no-untyped-def]
    env = {"CLOUDLET_POOL_INTERVAL": "1"}
    with (
        running_server(libvirt_conn, traversable_tmp(f"pool64-{db}-"), db, env) as server,
        server.client() as c,
    ):
        import_tiny(c, tiny_image)
        body = {
            "name": "rush",
            "template": {"image": "tiny", "memory": 128},
            "min_ready": 10,
            "max_size": 10,
            "on_checkin": "reuse",
        }
        c.request("POST", "/pools", json=body)
        with SizeWatch(server, "rush") as watch:
            started = time.monotonic()
            wait_pool(
                c,
                "rush",
                lambda p: p["counts"] == {"available": 10},
                timeout=300,
                what="10 available VMs",
            )
            fill_seconds = time.monotonic() - started

            results = _checkout_rush(server, "rush", 64)
            wins = [r for r in results if r[0] == 200]
            losses = [r for r in results if r[0] == 409]
            assert len(wins) + len(losses) == 64, [r for r in results if r[0] not in (200, 409)]
            assert len(wins) == 10, f"{len(wins)} checkouts succeeded"
            ids = {won["id"] for _, won, _ in wins}
            ips = {won["ip"] for _, won, _ in wins}
            assert len(ids) == 10 and len(ips) == 10 and None not in ips, wins
            for _, problem, headers in losses:
                assert problem["code"] == "pool_exhausted", problem
                assert problem["detail"] == EXHAUSTED_DETAIL, problem
                assert int(headers["retry-after"]) >= 1, headers

            pool = c.request("GET", "/pools/rush")
            assert pool["counts"] == {"checked-out": 10}, pool["counts"]
            assert {vm["instance_id"] for vm in pool["vms"]} == ids
            assert all(vm["holder"] and vm["lease_expires_at"] for vm in pool["vms"]), pool["vms"]
            _, first, _ = wins[0]
            wait_guest_http(first["ip"], first["name"], timeout=120)

            for ip in ips:
                c.request("POST", "/pools/rush/checkin", json={"ip": ip})
            pool = wait_pool(
                c, "rush", lambda p: p["counts"] == {"available": 10}, timeout=30, what="10 back"
            )
            assert {vm["instance_id"] for vm in pool["vms"]} == ids, "reuse replaced a VM"
            history = c.request("GET", "/pools/rush/history", params={"limit": 100})
            assert len(history) == 10, history
            assert {lease["instance_id"] for lease in history} == ids
            assert all(lease["end_reason"] == "returned" and lease["ended_at"] for lease in history)
            assert c.request("GET", "/leases") == []
        assert watch.samples >= 5, watch.errors
        assert watch.largest <= 10, f"the pool had {watch.largest} VMs: {watch.statuses}"
        c.request("DELETE", "/pools/rush")
        assert_clean_log(server)
        print(f"[{db}] 10 VMs available after {fill_seconds:.0f}s")


def _checkout_rush(server: Server, pool: str, n: int) -> list[tuple[int, dict[str, Any], httpx.Headers]]:
    """``n`` threads, each with its own connected client, check out at the same moment."""
    barrier = threading.Barrier(n)
    results: list[tuple[int, dict[str, Any], httpx.Headers] | BaseException | None] = [None] * n

    def one(i: int) -> None:
        try:
            with server.client() as c:
                c.http.get("/healthz").raise_for_status()  # connected before the start signal
                barrier.wait(timeout=60)
                resp = c.http.post(f"/api/v1/pools/{pool}/checkout")
                results[i] = (resp.status_code, resp.json(), resp.headers)
        except BaseException as exc:
            results[i] = exc
            barrier.abort()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    failed = [r for r in results if not isinstance(r, tuple)]
    assert not failed, failed
    return results  # type: ignore[return-value]


def test_lease_expiry_returns_the_vm(libvirt_conn, tiny_image, ssh_key):  # type: ignore[no-untyped-def]
    _, pub = ssh_key
    env = {"CLOUDLET_POOL_MIN_LEASE": "5", "CLOUDLET_POOL_INTERVAL": "1"}
    with (
        running_server(libvirt_conn, traversable_tmp("pool-lease-"), "sqlite", env) as server,
        server.client() as c,
    ):
        import_tiny(c, tiny_image)
        body = {
            "name": "short",
            "template": {"image": "tiny", "memory": 128, "ssh_keys": [pub]},
            "min_ready": 1,
            "max_size": 1,
            "on_checkin": "reset",
            "lease_default": 15,
            "lease_max": 60,
        }
        c.request("POST", "/pools", json=body)
        with SizeWatch(server, "short") as watch:
            wait_pool(c, "short", lambda p: p["counts"] == {"available": 1}, timeout=180, what="a ready VM")
            ws_url = server.url.replace("http", "ws") + "/api/v1/events"
            with connect(ws_url, additional_headers={"Authorization": f"Bearer {server.token}"}) as ws:
                got = c.request("POST", "/pools/short/checkout")
                ends = parse_time(got["lease_expires_at"])
                assert 10 < (ends - datetime.now(UTC)).total_seconds() <= 15.5, got
                assert [x["instance_id"] for x in c.request("GET", "/leases")] == [got["id"]]
                warning = _next_event(ws, "pool.lease_expiring", got["id"], before=ends)
                warned_at = datetime.now(UTC)
            assert warning["data"]["pool"] == "short", warning
            assert parse_time(warning["data"]["expires_at"]) == ends, warning

            # the controller (a pass a second) ends the lease soon after its end
            while c.request("GET", "/leases"):
                assert datetime.now(UTC) < ends + timedelta(seconds=15), "the lease was not ended in time"
                time.sleep(0.5)
            ended_at = datetime.now(UTC)
            assert ended_at >= ends, "the lease ended early"
            [lease] = c.request("GET", "/pools/short/history")
            assert lease["instance_id"] == got["id"] and lease["end_reason"] == "expired", lease
            assert parse_time(lease["ended_at"]) >= ends, lease

            fresh = wait_pool(
                c,
                "short",
                lambda p: p["counts"] == {"available": 1} and p["vms"][0]["instance_id"] != got["id"],
                timeout=240,
                what="a fresh VM after the reset",
            )
            replaced = datetime.now(UTC)
        assert watch.samples >= 5, watch.errors
        assert watch.largest <= 1, f"the pool had {watch.largest} VMs: {watch.statuses}"
        assert fresh["vms"][0]["instance_id"] in watch.statuses
        c.request("DELETE", "/pools/short")
        assert_clean_log(server)
        print(
            f"warned {(ends - warned_at).total_seconds():.1f}s before the end, ended "
            f"{(ended_at - ends).total_seconds():.1f}s after it, replaced "
            f"{(replaced - ended_at).total_seconds():.0f}s later"
        )


def _next_event(ws: Any, kind: str, instance_id: str, *, before: datetime) -> dict[str, Any]:
    """The first event ``kind`` about ``instance_id``; fail if none came before ``before``."""
    seen: list[str] = []
    while (left := (before - datetime.now(UTC)).total_seconds()) > 0:
        try:
            event = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            break
        seen.append(event["type"])
        if event["type"] == kind and event["data"].get("instance_id") == instance_id:
            assert datetime.now(UTC) < before, f"{kind} came after {before}"
            return event  # type: ignore[no-any-return]
    raise AssertionError(f"no {kind} event for {instance_id} before {before}; saw {seen}")
