"""Issue 13, the OS Cloud listener of a real server process: a bare port binds loopback only, a
foreign Host header (DNS rebinding) is refused, a configured token is required, and an address
off loopback without a token keeps the server from starting."""

from __future__ import annotations

import os
import shutil
import subprocess

import httpx
import pytest

from tests.helpers import free_port
from tests.integration.conftest import CLOUDLET, running_server, traversable_tmp

pytestmark = pytest.mark.integration

TOKEN = "an-oscloud-token-for-tests"


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.rsplit(":", 1)
                if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def test_a_bare_port_binds_loopback_checks_the_host_and_wants_the_token(libvirt_conn) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {"CLOUDLET_OSCLOUD_LISTEN": str(port), "CLOUDLET_OSCLOUD_TOKEN": TOKEN}
    with running_server(libvirt_conn, traversable_tmp("oscloud-guard-"), extra_env=env):
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing else
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as oc:
            assert "Welcome" in oc.get("/", headers=auth).text
            assert oc.get("/vm_list", headers={**auth, "Host": f"localhost:{port}"}).json() == []
            rebound = oc.get("/vm_list", headers={**auth, "Host": "evil.example"})
            assert rebound.status_code == 403 and rebound.json()["status"] == "error"
            anonymous = oc.get("/vm_list")
            assert anonymous.status_code == 401 and anonymous.json()["status"] == "error"
            assert oc.get("/vm_list", headers={"Authorization": "Bearer not-it"}).status_code == 401


def test_an_exposed_address_without_a_token_keeps_the_server_from_starting() -> None:
    port = free_port()
    data = traversable_tmp("oscloud-exposed-")
    env = {**os.environ, "CLOUDLET_DATA_DIR": str(data), "CLOUDLET_PORT": str(free_port())}
    env["CLOUDLET_OSCLOUD_LISTEN"] = f"0.0.0.0:{port}"
    env.pop("CLOUDLET_OSCLOUD_TOKEN", None)
    # Refused before any driver is touched; should that break, the simulated ones leave nothing behind.
    env.update(CLOUDLET_VM_DRIVER="sim", CLOUDLET_CONTAINER_DRIVER="none")
    try:
        done = subprocess.run([CLOUDLET, "server"], env=env, capture_output=True, text=True, timeout=30)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert done.returncode != 0
    assert "oscloud_token" in done.stderr and "not a loopback address" in done.stderr
    assert listening_addresses(port) == set()
