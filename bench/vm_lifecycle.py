"""VM life-cycle benchmark: cloudlet against the raw libvirt calls it wraps, measured side by side.

Prints, from one run with the variants interleaved round by round (these machines are noisy):
  - create+start through cloudlet's API vs the same work with raw libvirt-python (target <= 1.3)
  - cloudlet create time for a 1 GiB vs a 100 GiB disk (target <= 1.1)
  - the idle server's RSS on its second start (target <= 60 MB; LXD 5.0 idles at 58 MB here)

Usage: .venv/bin/python bench/vm_lifecycle.py [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import libvirt

from cloudlet.client import Client
from cloudlet.drivers.libvirt import xml
from cloudlet.drivers.libvirt.seed import build_nocloud_seed
from cloudlet.tinyimage import build_tiny_image

CLOUDLET = str(Path(sys.executable).with_name("cloudlet"))
LXD_IDLE_MB = 58


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Server:
    """A cloudlet server subprocess on a fresh data dir (mode 0755: QEMU must reach the disks)."""

    def __init__(self) -> None:
        base = Path("/var/tmp/cloudlet-bench")
        base.mkdir(mode=0o755, exist_ok=True)
        self.data_dir = Path(tempfile.mkdtemp(dir=base))
        self.data_dir.chmod(0o755)
        self.port = free_port()
        self.cidr = f"10.250.{secrets.randbelow(250)}.0/24"
        self.token = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "CLOUDLET_DATA_DIR": str(self.data_dir),
            "CLOUDLET_PORT": str(self.port),
            "CLOUDLET_DEFAULT_NETWORK_CIDR": self.cidr,
            "CLOUDLET_LOG_LEVEL": "warning",
        }
        log = (self.data_dir / "server.log").open("ab")
        self.proc = subprocess.Popen([CLOUDLET, "server"], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError("the server did not start: " + (self.data_dir / "server.log").read_text())
        if not self.token:
            self.token = re.findall(r"clt_[A-Za-z0-9_-]+", (self.data_dir / "server.log").read_text())[0]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.proc = None

    def client(self) -> Client:
        return Client(f"http://127.0.0.1:{self.port}", self.token, timeout=120)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class RawLibvirt:
    """The same work as a cloudlet create, done directly: overlay disk, seed ISO, DHCP reservation,
    define and start an equivalent domain on the same network."""

    def __init__(self, conn: libvirt.virConnect, image: Path, bridge: str, cidr: str, workdir: Path) -> None:
        self.conn, self.image, self.workdir = conn, image, workdir
        self.cidr = ipaddress.ip_network(cidr)
        self.net = next(n for n in conn.listAllNetworks(0) if n.bridgeName() == bridge)

    def create_start(self, n: int) -> tuple[Callable[[], None], Callable[[], None]]:
        """(the timed work, its clean-up)."""
        vm_id = str(uuid.uuid4())
        folder = self.workdir / vm_id
        mac = f"52:54:00:ee:{n // 256:02x}:{n % 256:02x}"
        ip = str(self.cidr[200 + n])  # far above what cloudlet's IPAM hands out in this run
        host = xml.DhcpHostEntry(mac, ip, f"raw{n}")

        def run() -> None:
            folder.mkdir(parents=True)
            subprocess.run(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "qcow2",
                    "-b",
                    str(self.image),
                    str(folder / "disk.qcow2"),
                    str(1024**3),
                ],
                check=True,
            )
            build_nocloud_seed(folder / "seed.iso", instance_id=vm_id, hostname=f"raw{n}")
            self.net.update(
                libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
                libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                -1,
                host.to_xml(),
                libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE,
            )
            dom = xml.Domain(
                name=f"bench-raw-{vm_id}",
                uuid=vm_id,
                domain_type="qemu",
                memory_mb=128,
                vcpus=1,
                metadata=xml.CloudletMetadata(vm_id, f"raw{n}", "bench", "bench"),
                disks=(
                    xml.Disk(str(folder / "disk.qcow2"), "qcow2", "vda"),
                    xml.Disk(str(folder / "seed.iso"), "raw", "vdb", readonly=True),
                ),
                interfaces=(xml.Interface(self.net.name(), mac),),
            )
            self.conn.defineXML(dom.to_xml()).create()

        def cleanup() -> None:
            with contextlib.suppress(libvirt.libvirtError):
                d = self.conn.lookupByName(f"bench-raw-{vm_id}")
                d.destroy()
                d.undefine()
            with contextlib.suppress(libvirt.libvirtError):
                self.net.update(
                    libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                    libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
                    -1,
                    host.to_xml(),
                    libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE,
                )
            shutil.rmtree(folder, ignore_errors=True)

        return run, cleanup


def cloudlet_create(c: Client, name: str, disk_gb: int) -> Callable[[], None]:
    return lambda: c.create_instance(name=name, image="tiny", memory=128, disk=disk_gb)


@contextlib.contextmanager
def bench_server() -> Iterator[Server]:
    server = Server()
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception), server.client() as c:
            for vm in c.instances():
                c.delete_instance(vm["id"], force=True)
            for net in c.networks():
                c.delete_network(net["id"])
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cache = Path(os.environ.get("CLOUDLET_CACHE_DIR", "~/.cache/cloudlet")).expanduser() / "tiny"
    tiny = build_tiny_image(cache)
    conn = libvirt.open("qemu:///system")
    results: dict[str, Any] = {}
    with bench_server() as server, server.client() as c:
        c.upload_image("tiny", tiny.open("rb"))
        image_file = next((server.data_dir / "images").glob("*.qcow2"))
        raw = RawLibvirt(
            conn, image_file, c.network("default")["bridge"], server.cidr, server.data_dir / "raw"
        )
        api_t, raw_t, small_t, big_t = [], [], [], []
        for n in range(args.rounds):
            api_t.append(timed(cloudlet_create(c, f"api{n}", 1)))
            c.delete_instance(f"api{n}", force=True)
            job, cleanup = raw.create_start(n)
            try:
                raw_t.append(timed(job))
            finally:
                cleanup()
            small_t.append(timed(cloudlet_create(c, f"small{n}", 1)))
            big_t.append(timed(cloudlet_create(c, f"big{n}", 100)))
            c.delete_instance(f"small{n}", force=True)
            c.delete_instance(f"big{n}", force=True)
        results["create_start_cloudlet_s"] = statistics.median(api_t)
        results["create_start_raw_s"] = statistics.median(raw_t)
        results["create_start_ratio"] = results["create_start_cloudlet_s"] / results["create_start_raw_s"]
        results["create_1g_s"] = statistics.median(small_t)
        results["create_100g_s"] = statistics.median(big_t)
        results["disk_size_ratio"] = results["create_100g_s"] / results["create_1g_s"]
        server.stop()
        server.start()  # second start: the steady state (no migrations to run)
        time.sleep(5)
        assert server.proc is not None
        results["idle_rss_mb"] = rss_mb(server.proc.pid)
        libvirtd = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True).stdout.split()
        results["libvirtd_rss_mb"] = rss_mb(int(libvirtd[0])) if libvirtd else None

    r = results
    api, raw_s = r["create_start_cloudlet_s"], r["create_start_raw_s"]
    print(f"rounds: {args.rounds} (variants interleaved)")
    print(
        f"create+start  cloudlet {api:.3f}s  raw libvirt {raw_s:.3f}s  "
        f"ratio {r['create_start_ratio']:.2f} (target <= 1.3): {verdict(r['create_start_ratio'], 1.3)}"
    )
    print(
        f"create        1 GiB {r['create_1g_s']:.3f}s  100 GiB {r['create_100g_s']:.3f}s  "
        f"ratio {r['disk_size_ratio']:.2f} (target <= 1.1): {verdict(r['disk_size_ratio'], 1.1)}"
    )
    print(
        f"idle RSS      cloudlet {r['idle_rss_mb']:.1f} MB (target <= 60): {verdict(r['idle_rss_mb'], 60)}; "
        f"vs LXD 5.0 {LXD_IDLE_MB} MB: ratio {r['idle_rss_mb'] / LXD_IDLE_MB:.2f}; "
        f"libvirtd here {r['libvirtd_rss_mb'] or 0:.1f} MB"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
