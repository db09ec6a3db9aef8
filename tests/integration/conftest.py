"""Integration fixtures: real cloudlet servers (subprocesses) on the real libvirt, with SQLite and
PostgreSQL, and the tiny guest image built once and cached."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudlet.api.app import ADMIN_TOKEN_FILE
from cloudlet.client import Client
from tests.helpers import eventually, free_port, require_real, require_service

CLOUDLET = str(Path(sys.executable).with_name("cloudlet"))
PG_ADMIN_URL = os.environ.get("CLOUDLET_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_WORKER_INDEX = int(re.sub(r"\D", "", _worker) or 0)
# Each test server gets its own /24 (libvirt networks are host-wide), e.g. 10.201.7.0/24.
_subnets = itertools.count(secrets.randbelow(200))


def next_subnet() -> str:
    """A fresh 10.x.y.0/24 for this xdist worker: x is the worker, y cycles."""
    return f"10.{200 + _WORKER_INDEX}.{next(_subnets) % 250}.0/24"


def traversable_tmp(prefix: str) -> Path:
    """A temp folder QEMU (running as libvirt-qemu) can reach: pytest's own tmp root is 0700."""
    base = Path("/var/tmp/cloudlet-tests")
    base.mkdir(mode=0o755, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    path.chmod(0o755)
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("CLOUDLET_CACHE_DIR", Path.home() / ".cache" / "cloudlet"))


@pytest.fixture(scope="session")
def libvirt_conn():  # type: ignore[no-untyped-def]
    try:
        import libvirt

        conn = libvirt.open("qemu:///system")
    except Exception as exc:
        require_real(f"libvirt at qemu:///system: {exc}")
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def tiny_image() -> Path:
    from cloudlet.tinyimage import build_tiny_image

    return build_tiny_image(cache_dir() / "tiny")


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("ssh")
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, key.with_suffix(".pub").read_text().strip()


@dataclass
class Server:
    data_dir: Path
    database_url: str | None
    cidr: str
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"

    def start(self) -> None:
        env = {
            **os.environ,
            "CLOUDLET_DATA_DIR": str(self.data_dir),
            "CLOUDLET_PORT": str(self.port),
            "CLOUDLET_DEFAULT_NETWORK_CIDR": self.cidr,
            "CLOUDLET_STOP_TIMEOUT": "30",
            "CLOUDLET_RESYNC_INTERVAL": "5",
            "CLOUDLET_IMAGE_IMPORT_DIRS": json.dumps([str(cache_dir())]),
            **self.extra_env,
        }
        if self.database_url:
            env["CLOUDLET_DATABASE_URL"] = self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([CLOUDLET, "server"], env=env, stdout=out, stderr=subprocess.STDOUT)

        def healthy() -> bool:
            assert self.proc is not None and self.proc.poll() is None, (
                f"server exited: {self.log.read_text()}"
            )
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200

        eventually(healthy, timeout=60, interval=0.2, what="the server to answer")
        if not self.token:  # the first start keeps it in a 0600 file (stdout is no terminal here)
            token_file = self.data_dir / ADMIN_TOKEN_FILE
            assert token_file.is_file(), f"the first start saved no admin token: {self.log.read_text()}"
            self.token = token_file.read_text().strip()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def client(self) -> Client:
        return Client(self.url, self.token, timeout=60)


def _make_pg_database() -> tuple[str, str]:
    try:
        import psycopg

        name = f"cloudlet_test_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name is ours, made of hex digits
    except Exception as exc:
        require_service(f"PostgreSQL at {PG_ADMIN_URL}: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cleanup_backend(libvirt_conn, server: Server) -> None:  # type: ignore[no-untyped-def]
    """After a server stops: remove what it may have left in libvirt (test hygiene only)."""
    import xml.etree.ElementTree as ET

    import libvirt

    ids = {p.name for p in (server.data_dir / "instances").glob("*")}
    for dom in libvirt_conn.listAllDomains(0):
        if dom.name().removeprefix("cloudlet-") in ids:
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
    for pool in libvirt_conn.listAllStoragePools(0):  # the server's pools live in its data dir
        with contextlib.suppress(libvirt.libvirtError):
            target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""
            if pool.name().startswith("cloudlet-") and Path(target).is_relative_to(server.data_dir):
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
    bridges = set(server.extra_env.get("_bridges", "").split())
    for net in libvirt_conn.listAllNetworks(0):
        with contextlib.suppress(libvirt.libvirtError):
            if net.name().startswith("cloudlet-") and net.bridgeName() in bridges:
                if net.isActive():
                    net.destroy()
                net.undefine()


@contextlib.contextmanager
def running_server(
    libvirt_conn, tmp: Path, db: str = "sqlite", extra_env: dict[str, str] | None = None
) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    pg_name = None
    url = None
    if db == "postgresql":
        pg_name, url = _make_pg_database()
    server = Server(data_dir=tmp, database_url=url, cidr=next_subnet(), extra_env=dict(extra_env or {}))
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception), server.client() as c:
            server.extra_env["_bridges"] = " ".join(n["bridge"] for n in c.networks())
            for vm in c.instances():
                with contextlib.suppress(Exception):
                    c.delete_instance(vm["id"], force=True)
            for net in c.networks():
                with contextlib.suppress(Exception):
                    c.delete_network(net["id"])
        server.stop()
        cleanup_backend(libvirt_conn, server)
        if pg_name:
            _drop_pg_database(pg_name)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, libvirt_conn, tmp_path_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    with running_server(libvirt_conn, traversable_tmp(f"server-{request.param}-"), request.param) as s:
        yield s


@pytest.fixture(scope="module")
def sqlite_server(libvirt_conn, tmp_path_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    with running_server(libvirt_conn, traversable_tmp("server-sqlite-")) as s:
        yield s


def import_tiny(client: Client, tiny_image: Path, name: str = "tiny") -> dict[str, object]:
    existing = [i for i in client.images() if i["name"] == name]
    if existing:
        return existing[0]
    client.import_image(name, str(tiny_image))
    return client.image(name)


def ssh_run(key: Path, ip: str, *command: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            f"root@{ip}",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def http_hostname(ip: str) -> str:
    return httpx.get(f"http://{ip}/", timeout=3).text


def wait_guest_http(ip: str, expected: str, timeout: float = 180) -> None:
    eventually(
        lambda: http_hostname(ip) == expected + "\n", timeout=timeout, interval=1, what=f"HTTP on {ip}"
    )


def wait_guest_ssh(key: Path, ip: str, timeout: float = 120) -> str:
    def attempt() -> str:
        proc = ssh_run(key, ip, "hostname")
        return proc.stdout.strip() if proc.returncode == 0 else ""

    return eventually(attempt, timeout=timeout, interval=2, what=f"SSH on {ip}")


def dhcp_macs(libvirt_conn, bridge: str) -> set[str]:  # type: ignore[no-untyped-def]
    import xml.etree.ElementTree as ET

    for net in libvirt_conn.listAllNetworks(0):
        if net.bridgeName() == bridge:
            return {h.get("mac", "") for h in ET.fromstring(net.XMLDesc(0)).findall("ip/dhcp/host")}
    raise AssertionError(f"no libvirt network with bridge {bridge}")


def domain_exists(libvirt_conn, instance_id: str) -> bool:  # type: ignore[no-untyped-def]
    import libvirt

    try:
        libvirt_conn.lookupByName(f"cloudlet-{instance_id}")
    except libvirt.libvirtError:
        return False
    return True


def wait_state(client: Client, ref: str, state: str, timeout: float = 60) -> dict[str, object]:
    return eventually(
        lambda: (vm := client.instance(ref))["state"] == state and vm,
        timeout=timeout,
        what=f"{ref} to be {state}",
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium for a module's dashboard tests (Playwright loads only here)."""
    from tests.integration.dashboard import chromium

    with chromium() as (_, b):
        yield b


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    """The real Docker engine, with the local busybox image the container tests build on."""
    import docker

    from tests.integration.docker_images import ensure_busybox_image

    ensure_busybox_image()
    client = docker.from_env()
    yield client
    client.close()
