"""Reservation pool benchmark: checkout+checkin pairs per second with many concurrent HTTP clients.

A pool with on_checkin=reuse (so the figure measures cloudlet, not guest boots) of ``--vms`` booted
tiny VMs; ``--clients`` concurrent HTTP clients (own connections) each loop: check out (queueing with
``wait``, first come first served, when every VM is held), check the VM back in. Printed: pairs per
second (target >= 500 on these 2-core machines), p50/p99 latency of checkout, checkin and the pair,
and the number of double allocations, which must be 0. Double allocations are counted twice over:
from the clients' view (a VM handed out again before its holder sent the check-in, or a check-in
refused) and from the server's lease history read from the database after the run (two leases of
one VM that overlap). Side by side in the same run, the same clients hammer ``GET /healthz`` for the
server's bare HTTP ceiling on this machine, so the ratio pairs/s : (healthz/s / 2) tells how much of
the HTTP budget a pair costs.
Usage: .venv/bin/python bench/pool_checkout.py [--clients 64] [--vms 64] [--seconds 20]
       [--sim] [--database-url postgresql+psycopg://...] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from sqlalchemy import create_engine, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib
import itertools

from vm_lifecycle import Server, percentile, remove_leftovers

from cloudlet.db.models import Pool, PoolLease
from cloudlet.tinyimage import build_tiny_image

TARGET_PAIRS_PER_S = 500
POOL = "bench"


@dataclass
class Tally:
    checkout_s: list[float] = field(default_factory=list)
    checkin_s: list[float] = field(default_factory=list)
    pair_s: list[float] = field(default_factory=list)
    # per VM: (monotonic time the checkout answer arrived, time the check-in was sent)
    holds: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    exhausted: int = 0
    refused_checkins: int = 0
    errors: list[str] = field(default_factory=list)


async def pair_loop(base: str, token: str, until: float, tally: Tally, measuring: bool) -> None:
    """One client on its own connection: check out (waiting in line if need be), check in, again."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base, headers=headers, connector=aiohttp.TCPConnector(limit=1)) as http:
        while time.monotonic() < until:
            t0 = time.monotonic()
            async with http.post(f"/api/v1/pools/{POOL}/checkout", params={"wait": 30}) as got:
                body = await got.text()
            t1 = time.monotonic()
            if got.status == 409:
                tally.exhausted += 1
                continue
            if got.status != 200:
                tally.errors.append(f"checkout {got.status}: {body[:200]}")
                await asyncio.sleep(0.1)
                continue
            vm = json.loads(body)["id"]
            t2 = time.monotonic()
            async with http.post(f"/api/v1/pools/{POOL}/checkin", json={"id": vm}) as back:
                answer = await back.text()
            t3 = time.monotonic()
            if back.status != 204:
                tally.refused_checkins += 1
                tally.errors.append(f"checkin {back.status}: {answer[:200]}")
            if measuring:
                tally.checkout_s.append(t1 - t0)
                tally.checkin_s.append(t3 - t2)
                tally.pair_s.append(t3 - t0)
            tally.holds[vm].append((t1, t2))


async def healthz_loop(base: str, until: float, counter: list[int]) -> None:
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=1)) as http:
        while time.monotonic() < until:
            async with http.get("/healthz") as got:
                got.raise_for_status()
                await got.read()
            counter[0] += 1


async def run_clients(
    base: str, token: str, clients: int, seconds: float, warmup: float
) -> tuple[Tally, float]:
    tally = Tally()
    start = time.monotonic()
    await asyncio.gather(*(pair_loop(base, token, start + warmup, Tally(), False) for _ in range(clients)))
    begin = time.monotonic()
    await asyncio.gather(*(pair_loop(base, token, begin + seconds, tally, True) for _ in range(clients)))
    return tally, time.monotonic() - begin


async def run_healthz(base: str, clients: int, seconds: float) -> float:
    counter = [0]
    begin = time.monotonic()
    await asyncio.gather(*(healthz_loop(base, begin + seconds, counter) for _ in range(clients)))
    return counter[0] / (time.monotonic() - begin)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_side_doubles(tally: Tally) -> int:
    """Holds of one VM that overlap: the next holder got it before the last one sent it back."""
    doubles = 0
    for holds in tally.holds.values():
        holds.sort()
        doubles += sum(1 for a, b in itertools.pairwise(holds) if b[0] < a[1])
    return doubles


def server_side_doubles(database_url: str) -> tuple[int, int]:
    """(leases in the history, pairs of one VM's leases that overlap), read from the database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            pool_id = conn.scalar(select(Pool.id).where(Pool.name == POOL))
            rows = conn.execute(
                select(PoolLease.instance_id, PoolLease.started_at, PoolLease.ended_at)
                .where(PoolLease.pool_id == pool_id)
                .order_by(PoolLease.instance_id, PoolLease.started_at)
            ).all()
    finally:
        engine.dispose()
    doubles = 0
    for prev, cur in itertools.pairwise(rows):
        if prev.instance_id == cur.instance_id and (prev.ended_at is None or prev.ended_at > cur.started_at):
            doubles += 1
    return len(rows), doubles


def wait_ready(http: httpx.Client, vms: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = http.get(f"/api/v1/pools/{POOL}").raise_for_status().json()["counts"]
        if counts.get("available", 0) >= vms:
            return
        time.sleep(1)
    raise RuntimeError(f"the pool did not fill to {vms} available VMs: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description="cloudlet pool checkout benchmark (see the module doc)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--vms", type=int, default=64, help="booted VMs in the pool (default 64)")
    parser.add_argument("--seconds", type=float, default=20, help="measured run time (default 20)")
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--sim", action="store_true", help="simulated VMs instead of libvirt guests")
    parser.add_argument("--database-url", help="default: the server's embedded SQLite")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args()
    cache = Path(os.environ.get("CLOUDLET_CACHE_DIR", "~/.cache/cloudlet")).expanduser()
    tiny = build_tiny_image(cache / "tiny")
    env = {"CLOUDLET_CONTAINER_DRIVER": "none", "CLOUDLET_POOL_INTERVAL": "1"}
    if args.sim:
        env["CLOUDLET_VM_DRIVER"] = "sim"
    if args.database_url:
        env["CLOUDLET_DATABASE_URL"] = args.database_url
    server = Server(import_dir=tiny.parent, extra_env=env)
    database_url = args.database_url or f"sqlite:///{server.data_dir / 'cloudlet.db'}"
    base = f"http://127.0.0.1:{server.port}"
    try:
        server.start()
        with server.client() as c:
            c.import_image("tiny", str(tiny))
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            template = {"image": "tiny", "memory": 128}
            body = {"name": POOL, "template": template, "min_ready": args.vms, "max_size": args.vms,
                    "on_checkin": "reuse", "lease_default": 600}  # fmt: skip
            http.post("/api/v1/pools", json=body).raise_for_status()
            started = time.monotonic()
            wait_ready(http, args.vms)
            fill_s = time.monotonic() - started
        healthz_per_s = asyncio.run(run_healthz(base, args.clients, min(args.seconds, 5)))
        assert server.proc is not None
        cpu_before = cpu_seconds(server.proc.pid)
        tally, elapsed = asyncio.run(run_clients(base, server.token, args.clients, args.seconds, args.warmup))
        server_cpu = (cpu_seconds(server.proc.pid) - cpu_before) / (elapsed + args.warmup)
        leases, server_doubles = server_side_doubles(database_url)
    finally:
        auth = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=base, headers=auth) as http, contextlib.suppress(httpx.HTTPError):
            http.delete(f"/api/v1/pools/{POOL}", timeout=300)
        server.stop()
        if not args.sim:
            import libvirt

            conn = libvirt.open("qemu:///system")
            remove_leftovers(conn, server)
            conn.close()
        shutil.rmtree(server.data_dir, ignore_errors=True)

    pairs = len(tally.pair_s)
    rate = pairs / elapsed
    doubles = client_side_doubles(tally) + tally.refused_checkins
    result: dict[str, Any] = {
        "clients": args.clients,
        "vms": args.vms,
        "driver": "sim" if args.sim else "libvirt",
        "database": database_url.split(":", 1)[0],
        "seconds": elapsed,
        "pool_fill_s": fill_s,
        "pairs": pairs,
        "pairs_per_s": rate,
        "healthz_per_s": healthz_per_s,
        "pair_share_of_http_ceiling": rate / (healthz_per_s / 2),
        "server_cpu_cores": server_cpu,
        "server_cpu_ms_per_pair": server_cpu * 1000 / rate if rate else None,
        "latency_ms": {
            k: {"p50": percentile(v, 50) * 1000, "p99": percentile(v, 99) * 1000}
            for k, v in (("checkout", tally.checkout_s), ("checkin", tally.checkin_s), ("pair", tally.pair_s))
        },
        "pool_exhausted": tally.exhausted,
        "double_allocations_client": doubles,
        "double_allocations_server": server_doubles,
        "leases_in_history": leases,
        "errors": tally.errors[:10],
    }
    print(f"cloudlet pool checkout benchmark: {args.clients} clients, {args.vms} {result['driver']} VMs, "
          f"{result['database']}, on_checkin=reuse, {elapsed:.1f} s measured")  # fmt: skip
    print(f"pool filled to {args.vms} available VMs in {fill_s:.1f} s")
    for k, v in result["latency_ms"].items():
        print(f"{k} latency: p50 {v['p50']:.1f} ms, p99 {v['p99']:.1f} ms")
    print(f"server CPU: {server_cpu:.2f} cores, {result['server_cpu_ms_per_pair'] or 0:.2f} ms per pair")
    print(f"bare HTTP ceiling (GET /healthz, same clients): {healthz_per_s:.0f} requests/s")
    print(f"pairs per HTTP budget (pairs/s over healthz/s / 2): {result['pair_share_of_http_ceiling']:.2f}")
    print(
        f"double allocations (must be 0): {doubles} seen by clients,"
        f" {server_doubles} in {leases} server leases"
    )
    if tally.errors:
        print(f"errors ({len(tally.errors)}): {tally.errors[:3]}")
    verdict = "PASS" if rate >= TARGET_PAIRS_PER_S and doubles == server_doubles == 0 else "MISS"
    print(f"checkout+checkin pairs/s: {rate:.0f} (target >= {TARGET_PAIRS_PER_S}, 0 doubles): {verdict}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
