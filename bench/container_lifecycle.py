"""Container benchmark: cloudlet against the raw Docker SDK calls it wraps, measured side by side.

One run, variants interleaved round by round (these machines are noisy):
- run-to-running: `POST /api/v1/instances` (kind container, waited on) vs the low-level Docker SDK's
  create_container + start of the same image and command, on the same Docker network with a static
  address (what cloudlet's driver does). Target ratio <= 1.3.
- listing N containers (default 500) through `GET /api/v1/instances?kind=container`: p50 and p99,
  next to the raw SDK listing the same containers by label.
It reports; it never fails on a missed target.
Usage: .venv/bin/python bench/container_lifecycle.py [--rounds 10] [--list-count 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from docker.api import APIClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.integration.docker_images

from vm_lifecycle import Server, percentile

from cloudlet.client import Client
from tests.integration.docker_images import BUSYBOX_REF, ensure_busybox_image

COMMAND = ["sleep", "3600"]
RAW_LABEL = "cloudlet-bench.raw"


def cloudlet_run(c: Client, name: str, network: str = "default") -> float:
    started = time.perf_counter()
    op = c.create_instance(kind="container", name=name, image=BUSYBOX_REF, command=COMMAND, network=network)
    elapsed = time.perf_counter() - started
    assert op["status"] == "succeeded", op
    return elapsed


class RawDocker:
    """The same work with the SDK: create (labelled, static address on cloudlet's network) + start."""

    def __init__(self, api: APIClient, network: str, cidr: str) -> None:
        self.api, self.network = api, network
        hosts = list(ipaddress.ip_network(cidr).hosts())
        self.addresses = [str(a) for a in reversed(hosts[-60:-2])]  # far from cloudlet's lowest-first IPAM
        self.ids: list[str] = []

    def run(self, n: int) -> float:
        started = time.perf_counter()
        networking = self.api.create_networking_config(
            {self.network: self.api.create_endpoint_config(ipv4_address=self.addresses[n])}
        )
        created = self.api.create_container(
            BUSYBOX_REF,
            command=COMMAND,
            name=f"bench-raw-{n}-{time.monotonic_ns()}",
            labels={RAW_LABEL: "1"},
            host_config=self.api.create_host_config(network_mode=self.network, init=True),
            networking_config=networking,
            detach=True,
        )
        self.api.start(created["Id"])
        elapsed = time.perf_counter() - started
        self.ids.append(created["Id"])
        return elapsed

    def remove_all(self) -> None:
        for cid in self.ids:
            with contextlib.suppress(Exception):
                self.api.remove_container(cid, force=True)
        self.ids.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--list-count", type=int, default=500)
    parser.add_argument("--list-requests", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    ensure_busybox_image()
    api = APIClient(version="1.41")
    server = Server(Path(tempfile.mkdtemp(prefix="cloudlet-bench-import-", dir="/var/tmp")))
    results: dict[str, Any] = {}
    raw: RawDocker | None = None
    server.start()
    try:
        with server.client() as c:
            net = c.network("default")
            cloudlet_run(c, "warmup")  # makes the Docker network on cloudlet's bridge
            c.delete_instance("warmup", force=True)
            raw = RawDocker(api, str(_backend_network(api, net["cidr"])), net["cidr"])
            raw.run(0)  # warm-up of the raw side
            raw.remove_all()

            ours, theirs = [], []
            for n in range(1, args.rounds + 1):
                ours.append(cloudlet_run(c, f"bench{n}"))
                theirs.append(raw.run(n))
                c.delete_instance(f"bench{n}", force=True)
                raw.remove_all()
            ratio = statistics.median(ours) / statistics.median(theirs)
            results["run_to_running"] = {
                "cloudlet_s": ours,
                "raw_sdk_s": theirs,
                "cloudlet_median_s": statistics.median(ours),
                "raw_median_s": statistics.median(theirs),
                "ratio": ratio,
                "target": 1.3,
            }
            verdict = "PASS" if ratio <= 1.3 else "MISS"
            print(
                f"run-to-running  cloudlet {statistics.median(ours) * 1000:7.1f} ms  raw SDK "
                f"{statistics.median(theirs) * 1000:7.1f} ms  ratio {ratio:.2f} (target <= 1.3) {verdict}"
            )

            print(f"creating {args.list_count} containers for the listing test...", file=sys.stderr)
            # a /22 holds 1000 addresses; the default /24 only 250
            c.create_network("many", f"10.251.{4 * secrets.randbelow(60)}.0/22")
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: cloudlet_run(c, f"many{i}", "many"), range(args.list_count)))
            api_ms, raw_ms = [], []
            for _ in range(args.list_requests):
                t = time.perf_counter()
                page = c.request("GET", "/instances", params={"kind": "container", "limit": 1000})
                api_ms.append((time.perf_counter() - t) * 1000)
                assert page["total"] == args.list_count
                t = time.perf_counter()
                found = api.containers(all=True, filters={"label": "cloudlet.instance"})
                raw_ms.append((time.perf_counter() - t) * 1000)
                assert len(found) >= args.list_count
            results["list"] = {
                "count": args.list_count,
                "api_p50_ms": percentile(api_ms, 50),
                "api_p99_ms": percentile(api_ms, 99),
                "raw_p50_ms": percentile(raw_ms, 50),
                "raw_p99_ms": percentile(raw_ms, 99),
            }
            print(
                f"list {args.list_count} containers  API p50 {percentile(api_ms, 50):6.1f} ms  "
                f"p99 {percentile(api_ms, 99):6.1f} ms   raw SDK p50 {percentile(raw_ms, 50):6.1f} ms  "
                f"p99 {percentile(raw_ms, 99):6.1f} ms"
            )
    finally:
        if raw is not None:
            raw.remove_all()
        with contextlib.suppress(Exception), server.client() as c:
            names = [i["name"] for i in c.instances(kind="container")]
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda name: c.delete_instance(name, force=True), names))
            for n in c.networks():
                with contextlib.suppress(Exception):
                    c.delete_network(n["id"])
        server.stop()
        api.close()
        shutil.rmtree(server.data_dir, ignore_errors=True)
        shutil.rmtree(server.import_dir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _backend_network(api: APIClient, cidr: str) -> str:
    """The Docker network cloudlet made on its default network's bridge."""
    for net in api.networks():
        for pool in (net.get("IPAM") or {}).get("Config") or []:
            if pool.get("Subnet") == cidr:
                return str(net["Name"])
    raise RuntimeError(f"no Docker network for {cidr}")


if __name__ == "__main__":
    raise SystemExit(main())
