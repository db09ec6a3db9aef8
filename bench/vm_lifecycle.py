"""VM life-cycle benchmark: cloudlet against the raw libvirt calls it wraps, measured side by side.

One run, variants interleaved round by round (these machines are noisy): create+start through the API
vs raw libvirt-python (target <= 1.3), create of a 1 GiB vs a 100 GiB disk VM (target <= 1.1), the idle
server's RSS on its second start (target <= 60 MB). It reports; it never fails on a missed target.
Usage: .venv/bin/python bench/vm_lifecycle.py [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import libvirt

from cloudlet.client import Client
from cloudlet.drivers.libvirt import xml
from cloudlet.drivers.libvirt.seed import build_nocloud_seed
from cloudlet.tinyimage import build_tiny_image

CLOUDLET = str(Path(sys.executable).with_name("cloudlet"))
LXD_IDLE_MB = 58.0  # HOST-NOTES.md: LXD 5.0 daemon, idle, measured on these machines
# As cloudlet's driver does it: the DHCP reservation also goes into the persistent config.
UPDATE_FLAGS = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank percentile ``p`` (0-100) of ``samples``; NaN for none."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB (MiB), from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Server:
    """A cloudlet server subprocess on a fresh data dir under /var/tmp (0755: QEMU must reach the disks),
    in its own session: a Ctrl-C reaches only the benchmark, which cleans up through the live server."""

    def __init__(self, import_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.extra_env = extra_env or {}
        self.data_dir = Path(tempfile.mkdtemp(prefix="cloudlet-bench-", dir="/var/tmp"))
        self.data_dir.chmod(0o755)
        self.port = free_port()
        self.cidr = f"10.250.{secrets.randbelow(250)}.0/24"
        self.import_dir, self.log, self.token = import_dir, self.data_dir / "server.log", ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait for /healthz; on the first start, read the admin token."""
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLOUDLET_")},  # no stray config
            "CLOUDLET_ACCELERATOR": "tcg",  # the raw domains are type "qemu" too
            "CLOUDLET_DATA_DIR": str(self.data_dir),
            "CLOUDLET_PORT": str(self.port),
            "CLOUDLET_DEFAULT_NETWORK_CIDR": self.cidr,
            "CLOUDLET_IMAGE_IMPORT_DIRS": json.dumps([str(self.import_dir)]),
            **self.extra_env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [CLOUDLET, "server"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        token_file = self.data_dir / "admin-token"  # saved by the first start (stdout is a log file)
        if not token_file.is_file():
            raise RuntimeError("the first start saved no admin token")
        self.token = token_file.read_text().strip()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after 30 s."""
        if self.proc is None:
            return
        self.proc.terminate()  # SIGTERM; Popen ignores a process it has already reaped
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def client(self) -> Client:
        return Client(f"http://127.0.0.1:{self.port}", self.token, timeout=120)


def destroy_undefine(conn: libvirt.virConnect, name: str) -> None:
    """Stop and forget a domain if it exists."""
    with contextlib.suppress(libvirt.libvirtError):
        dom = conn.lookupByName(name)
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()  # fails when it is not running: fine
        dom.undefine()


def update_dhcp(net: libvirt.virNetwork, command: int, host: xml.DhcpHostEntry) -> None:
    """Add or delete a DHCP reservation, the way cloudlet's driver does."""
    net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host.to_xml(), UPDATE_FLAGS)


class RawLibvirt:
    """The work of a cloudlet create, done with libvirt-python directly, in the driver's order:
    DHCP reservation, qcow2 overlay, NoCloud seed, define, start. Same domain shape, same network."""

    def __init__(self, conn: libvirt.virConnect, image: Path, bridge: str, cidr: str, workdir: Path) -> None:
        self.conn, self.image, self.workdir = conn, image, workdir
        self.net_name = next(n.name() for n in conn.listAllNetworks(0) if n.bridgeName() == bridge)
        self.cidr = ipaddress.ip_network(cidr)
        self.made: list[tuple[str, xml.DhcpHostEntry]] = []  # (id, reservation): what to clean up

    def create_start(self, n: int) -> float:
        """Create and start raw VM number ``n``; return the seconds from the first step to create()."""
        vm_id, mac = str(uuid.uuid4()), f"52:54:00:be:{n // 256 % 256:02x}:{n % 256:02x}"
        # .200-.249: far above the addresses cloudlet's IPAM hands out (lowest first) in this run.
        host = xml.DhcpHostEntry(mac, str(self.cidr[200 + n % 50]), f"raw{n}")
        self.made.append((vm_id, host))
        folder = self.workdir / vm_id
        start = time.perf_counter()
        net = self.conn.networkLookupByName(self.net_name)
        if not any(h.mac == mac for h in xml.dhcp_hosts_of(net.XMLDesc(0))):
            update_dhcp(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, host)
        folder.mkdir(parents=True)
        disk, seed = folder / "disk.qcow2", folder / "seed.iso"
        overlay = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(self.image)]
        subprocess.run([*overlay, str(disk), str(1024**3)], check=True, capture_output=True)
        build_nocloud_seed(seed, instance_id=vm_id, hostname=host.name)
        domain = xml.Domain(
            name=f"bench-raw-{vm_id}",  # not "cloudlet-<id>": the server's reconciler leaves it alone
            uuid=vm_id,
            domain_type="qemu",
            memory_mb=128,
            vcpus=1,
            metadata=xml.CloudletMetadata(vm_id, host.name, "bench", "bench"),
            disks=(
                xml.Disk(path=str(disk), format="qcow2", target="vda"),
                xml.Disk(path=str(seed), format="raw", target="vdb", readonly=True),
            ),
            interfaces=(xml.Interface(network=self.net_name, mac=mac),),
        )
        self.conn.defineXML(domain.to_xml()).create()
        return time.perf_counter() - start

    def delete_all(self) -> None:
        """Destroy, undefine and unreserve every raw VM made so far, and delete its files."""
        while self.made:
            vm_id, host = self.made.pop()
            destroy_undefine(self.conn, f"bench-raw-{vm_id}")
            with contextlib.suppress(libvirt.libvirtError):  # the reconciler may have dropped it already
                net = self.conn.networkLookupByName(self.net_name)
                update_dhcp(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, host)
            shutil.rmtree(self.workdir / vm_id, ignore_errors=True)


def cloudlet_create(c: Client, name: str, disk_gb: int = 1) -> float:
    """Seconds from POST /instances to its operation succeeded (VM defined and started); then delete it."""
    start = time.perf_counter()
    try:
        c.create_instance(wait=True, name=name, image="tiny", memory=128, disk=disk_gb)
        return time.perf_counter() - start
    finally:
        with contextlib.suppress(Exception):
            c.delete_instance(name, force=True)


def in_subnet(net: libvirt.virNetwork, cidr: str) -> bool:
    """Whether a libvirt network's first <ip> element is the subnet ``cidr``."""
    ip = ET.fromstring(net.XMLDesc(0)).find("ip")
    found = f"{ip.get('address')}/{ip.get('prefix') or ip.get('netmask')}" if ip is not None else "::/128"
    return ipaddress.ip_network(found, strict=False) == ipaddress.ip_network(cidr)


def remove_leftovers(conn: libvirt.virConnect, server: Server) -> None:
    """After the server stopped: remove any domain it left and its libvirt network (found by CIDR)."""
    for folder in (server.data_dir / "instances").glob("*"):
        destroy_undefine(conn, f"cloudlet-{folder.name}")
    for net in conn.listAllNetworks(0):
        if net.name().startswith("cloudlet-") and in_subnet(net, server.cidr):
            with contextlib.suppress(libvirt.libvirtError):
                if net.isActive():
                    net.destroy()
                net.undefine()


def measure(server: Server, conn: libvirt.virConnect, rounds: int, tiny: Path) -> dict[str, Any]:
    """Run the three benchmarks against a started server; return the raw samples and the results."""
    r: dict[str, Any] = {"rounds": rounds, "cloudlet_s": [], "raw_s": [], "disk_1g_s": [], "disk_100g_s": []}
    raw: RawLibvirt | None = None
    try:
        with server.client() as c:
            c.import_image("tiny", str(tiny))
            image_file = next((server.data_dir / "images").glob("*.qcow2"))
            bridge = c.network("default")["bridge"]
            raw = RawLibvirt(conn, image_file, bridge, server.cidr, server.data_dir / "raw")
            cloudlet_create(c, "warmup", 1)  # first-use costs (page cache, lazy imports) stay unmeasured
            raw.create_start(999)
            raw.delete_all()
            for n in range(rounds):  # A, B, A, B... each VM deleted before the next is made
                r["cloudlet_s"].append(cloudlet_create(c, f"api{n}"))
                try:
                    r["raw_s"].append(raw.create_start(n))
                finally:
                    raw.delete_all()
            for n in range(rounds):
                r["disk_1g_s"].append(cloudlet_create(c, f"small{n}", 1))
                r["disk_100g_s"].append(cloudlet_create(c, f"big{n}", 100))
        server.stop()
        server.start()  # the second start is the steady state: no migrations, no first-run setup
        time.sleep(5)
        assert server.proc is not None
        r["server_rss_mb"] = rss_mb(server.proc.pid)
        pids = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True).stdout.split()
        r["libvirtd_rss_mb"] = rss_mb(int(pids[0])) if pids else None  # printed as 0 when not running
        return r
    finally:
        if raw is not None:
            raw.delete_all()
        with contextlib.suppress(Exception), server.client() as c:
            for vm in c.instances():
                with contextlib.suppress(Exception):
                    c.delete_instance(vm["id"], force=True)
        server.stop()


def report(r: dict[str, Any]) -> dict[str, Any]:
    """Print the table; return the summary (medians, ratios, verdicts) for --json."""
    med = {k: statistics.median(r[k]) for k in ("cloudlet_s", "raw_s", "disk_1g_s", "disk_100g_s")}
    checks = [
        ("create+start ratio cloudlet/raw", med["cloudlet_s"] / med["raw_s"], 1.3, ""),
        ("create ratio 100G/1G", med["disk_100g_s"] / med["disk_1g_s"], 1.1, ""),
        ("idle RSS cloudlet server", r["server_rss_mb"], 60.0, " MB"),
    ]
    print(f"cloudlet VM life-cycle benchmark: {r['rounds']} rounds, variants interleaved, TCG guests")
    labels = ["create+start cloudlet", "create+start raw libvirt", "create 1 GiB disk", "create 100 GiB disk"]
    for label, value in zip(labels, med.values(), strict=True):
        print(f"{label} (median): {value:.3f} s")
    summary: dict[str, Any] = {"samples": r, "medians_s": med, "checks": {}}
    for name, value, target, unit in checks:
        verdict = "PASS" if value <= target else "MISS"
        print(f"{name}: {value:.2f}{unit} (target <= {target:g}{unit}): {verdict}")
        summary["checks"][name] = {"value": value, "target": target, "verdict": verdict}
    lxd_ratio = r["server_rss_mb"] / LXD_IDLE_MB
    print(f"idle RSS ratio cloudlet/LXD 5.0 ({LXD_IDLE_MB:g} MB): {lxd_ratio:.2f}")
    print(f"idle RSS libvirtd (context): {r['libvirtd_rss_mb'] or 0:.1f} MB")
    return {**summary, "rss_ratio_vs_lxd": lxd_ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description="cloudlet VM life-cycle benchmark (see the module doc)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per comparison (default 5)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    cache = Path(os.environ.get("CLOUDLET_CACHE_DIR", "~/.cache/cloudlet")).expanduser()
    tiny = build_tiny_image(cache / "tiny")
    conn = libvirt.open("qemu:///system")
    server = Server(import_dir=tiny.parent)
    try:
        server.start()
        summary = report(measure(server, conn, args.rounds, tiny))
    finally:
        server.stop()
        remove_leftovers(conn, server)
        shutil.rmtree(server.data_dir, ignore_errors=True)
        conn.close()
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
