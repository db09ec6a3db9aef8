"""Issue 14: the replaced "Virtual Machine Reservation System" API on its own listener of a real
server, against real tiny VMs.

The first test runs that system's documented commands as written, but for the port: its README's
``curl "http://127.0.0.1:5000/..."`` lines, and its test plan's
``seq 5 | parallel -j5 curl .../createVM/`` and ``.../checkoutVM/`` (GNU parallel, five curl
processes at once; scripts/setup-host installs it). parallel appends each input line to the
command, so curl is also asked for the URLs "1" to "5": the test gives curl a proxy on a closed
loopback port for those (``http_proxy``, with ``no_proxy`` for 127.0.0.1), so they fail on
loopback instead of going anywhere.

The second makes the two races on the listener, with SQLite and PostgreSQL: 12 parallel createVM
against a maximum of 3 make exactly 3 VMs (the pool never has more) and 9 "Error: Maximum VM Count
reached"; then 64 parallel checkoutVM against those 3 give each VM once and 61 "No VMs currently
available" answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import eventually, free_port, require_real
from tests.integration.conftest import (
    Server,
    domain_exists,
    import_tiny,
    running_server,
    traversable_tmp,
    wait_guest_http,
)
from tests.integration.test_events_and_cli import _cli
from tests.integration.test_security_oscloud_listener import listening_addresses

pytestmark = pytest.mark.integration

MAX_REACHED = "Error: Maximum VM Count reached"
NO_VM = "No VMs currently available, please try after some time"
NO_SUCH_ID = "Could not find a vm with given unique ID"
NO_SUCH_VM = "Could not find a vm with given details"
BOOT_TIMEOUT = 300  # five tiny VMs booting at once under TCG on two cores


def reservation_env(port: int, pool: str) -> dict[str, str]:
    return {
        "CLOUDLET_RESERVATION_LISTEN": str(port),  # a bare port, as a user would start: loopback
        "CLOUDLET_RESERVATION_POOL": pool,
        "CLOUDLET_POOL_INTERVAL": "1",
    }


def make_pool(server: Server, tiny_image: Path, name: str, max_size: int) -> None:
    """A pool as the original system was: no VM until createVM, a returned VM available again,
    and checkouts that last (a day here)."""
    with server.client() as c:
        import_tiny(c, tiny_image)
        body = {
            "name": name,
            "template": {"image": "tiny", "memory": 128},
            "min_ready": 0,
            "max_size": max_size,
            "on_checkin": "reuse",
            "lease_default": 86400,
            "lease_max": 86400,
        }
        c.request("POST", "/pools", json=body)


class Shell:
    """Runs the system's commands as written, with the port of this test's listener, through
    bash; curl's stray URLs (parallel's appended "1".."5") go to a closed loopback port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.env = {
            **os.environ,
            "http_proxy": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "no_proxy": "127.0.0.1,localhost",
        }
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY"):
            self.env.pop(name, None)

    def run(self, command: str) -> list[dict[str, Any]]:
        """The JSON bodies the command printed (several when parallel ran five curls)."""
        command = command.replace("127.0.0.1:5000", f"127.0.0.1:{self.port}")
        done = subprocess.run(
            ["bash", "-c", command], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        bodies = parse_bodies(done.stdout)
        assert bodies, f"{command!r} printed nothing: {done.stderr}"
        return bodies

    def one(self, command: str) -> dict[str, Any]:
        [body] = self.run(command)
        return body


def parse_bodies(text: str) -> list[dict[str, Any]]:
    """The JSON objects of ``text``, one after the other (curl adds no newline between them).
    Each is an object, not a JSON string holding one: the original's double encoding is gone."""
    decoder, bodies, at = json.JSONDecoder(), [], 0
    text = text.strip()
    while at < len(text):
        body, at = decoder.raw_decode(text, at)
        assert isinstance(body, dict) and set(body) == {"status", "data", "message"}, body
        bodies.append(body)
        while at < len(text) and text[at].isspace():
            at += 1
    return bodies


def success(body: dict[str, Any]) -> dict[str, Any]:
    assert body["status"] == "success" and body["message"] is None, body
    return body["data"]  # type: ignore[no-any-return]


def error(body: dict[str, Any], message: str) -> None:
    assert body == {"status": "error", "data": None, "message": message}, body


def gnu_parallel() -> bool:
    """GNU parallel is the one on PATH (moreutils has another ``parallel``, with other options)."""
    if shutil.which("parallel") is None:
        return False
    version = subprocess.run(["parallel", "--version"], capture_output=True, text=True, check=False)
    return "GNU parallel" in version.stdout


def test_the_documented_commands_as_written(libvirt_conn, tiny_image):  # type: ignore[no-untyped-def]
    if not gnu_parallel() or shutil.which("curl") is None:
        require_real("GNU parallel and curl (scripts/setup-host installs them)")
    port = free_port()
    with running_server(
        libvirt_conn, traversable_tmp("reservation-"), extra_env=reservation_env(port, "lab")
    ) as server:
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
        with server.client() as c:
            import_tiny(c, tiny_image)
        # the README's pool, but for its name and size
        readme = "pool create lab --image tiny --memory 128 --min-ready 0 --max-size 5 --on-checkin reuse"
        pool = _cli(server, *readme.split(), "--lease", "86400", "--lease-max", "86400")
        assert pool.returncode == 0, pool.stderr
        sh = Shell(port)

        asked = time.monotonic()
        created = [success(b) for b in sh.run("seq 5 | parallel -j5 curl http://127.0.0.1:5000/createVM/")]
        answered = time.monotonic() - asked
        assert len(created) == 5 and all(vm["vm_status"] == "creating" for vm in created), created
        assert len({vm["vm_id"] for vm in created}) == 5 and len({vm["ip"] for vm in created}) == 5
        error(sh.one('curl  "http://127.0.0.1:5000/createVM/"'), MAX_REACHED)
        first = created[0]
        ident = f"unique_id={first['vm_id']}&ip={first['ip']}"
        assert success(
            sh.one(f'curl "http://127.0.0.1:5000/getVMStatus/?unique_id={first["vm_id"]}&ip"')
        ) == {"vm_status": "creating"}

        def all_available() -> bool:  # getVMStatus follows each VM from creating to available
            for vm in created:
                body = sh.one(f'curl "http://127.0.0.1:5000/getVMStatus/?unique_id={vm["vm_id"]}&ip"')
                if success(body)["vm_status"] != "available":
                    return False
            return True

        started = time.monotonic()
        eventually(all_available, timeout=BOOT_TIMEOUT, interval=2, what="5 VMs available")
        booted = time.monotonic() - started
        assert success(sh.one(f'curl "http://127.0.0.1:5000/getVM/?unique_id={first["vm_id"]}&ip"')) == {
            **first,
            "vm_status": "available",
        }
        error(
            sh.one(f'curl "http://127.0.0.1:5000/checkinVM/?{ident}"'),
            "You cannot check-in a VM that is in ' available ' State",
        )

        got = [success(b) for b in sh.run("seq 5 | parallel -j5 curl http://127.0.0.1:5000/checkoutVM/")]
        assert len(got) == 5 and all(vm["vm_status"] == "checked-out" for vm in got), got
        assert {(vm["vm_id"], vm["ip"]) for vm in got} == {(vm["vm_id"], vm["ip"]) for vm in created}
        error(sh.one('curl  "http://127.0.0.1:5000/checkoutVM/"'), NO_VM)
        with server.client() as c:
            names = {vm["instance_id"]: vm["name"] for vm in c.request("GET", "/pools/lab")["vms"]}
        wait_guest_http(first["ip"], names[first["vm_id"]], timeout=120)  # the IP is the VM's

        assert success(sh.one(f'curl "http://127.0.0.1:5000/getVM/?unique_id={first["vm_id"]}&ip"')) == {
            **first,
            "vm_status": "checked-out",
        }
        error(
            sh.one(f'curl "http://127.0.0.1:5000/deleteVM/?{ident}"'),
            "You cannot delete a VM that is in ' checked-out ' State",
        )
        other_ip = created[1]["ip"]
        wrong = f"unique_id={first['vm_id']}&ip={other_ip}"
        error(sh.one(f'curl "http://127.0.0.1:5000/checkinVM/?{wrong}"'), NO_SUCH_VM)
        error(sh.one(f'curl "http://127.0.0.1:5000/deleteVM/?{wrong}"'), NO_SUCH_VM)
        error(sh.one('curl "http://127.0.0.1:5000/getVM/?unique_id=dummy-value&ip"'), NO_SUCH_ID)
        error(sh.one('curl "http://127.0.0.1:5000/getVMStatus/?unique_id=dummy-value&ip"'), NO_SUCH_ID)

        back = success(sh.one(f'curl "http://127.0.0.1:5000/checkinVM/?{ident}"'))
        assert back == {**first, "vm_status": "available"}
        gone = success(sh.one(f'curl "http://127.0.0.1:5000/deleteVM/?{ident}"'))
        assert gone == {**first, "vm_status": "deleted"}
        error(sh.one(f'curl "http://127.0.0.1:5000/getVM/?unique_id={first["vm_id"]}&ip"'), NO_SUCH_ID)
        eventually(
            lambda: not domain_exists(libvirt_conn, first["vm_id"]),
            timeout=60,
            what="the deleted VM's domain",
        )
        # the place is free again once the VM is gone: a sixth create works
        made = eventually(
            lambda: (b := sh.one('curl "http://127.0.0.1:5000/createVM/"'))["status"] == "success" and b,
            timeout=60,
            interval=1,
            what="the deleted VM's place",
        )
        assert success(made)["vm_status"] == "creating"
        print(f"5 parallel createVM answered in {answered:.1f}s; the VMs were available {booted:.0f}s later")


def rush(port: int, route: str, n: int) -> list[dict[str, Any]]:
    """``n`` clients, each already connected, GET ``route`` at the same moment; their bodies."""
    barrier = threading.Barrier(n)
    bodies: list[dict[str, Any] | BaseException | None] = [None] * n

    def one(i: int) -> None:
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
                client.get("/getVM/")  # connected before the start signal
                barrier.wait(timeout=60)
                resp = client.get(route)
                assert resp.status_code == 200, resp.text
                [bodies[i]] = parse_bodies(resp.text)
        except BaseException as exc:
            bodies[i] = exc
            barrier.abort()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    failed = [b for b in bodies if not isinstance(b, dict)]
    assert not failed, failed
    return bodies  # type: ignore[return-value]


class Largest:
    """The largest number of VMs the pool had, sampled every half second meanwhile."""

    def __init__(self, server: Server, pool: str) -> None:
        self.server, self.pool, self.seen, self.samples = server, pool, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Largest:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with self.server.client() as c:
            while not self._stop.is_set():
                self.seen = max(self.seen, len(c.request("GET", f"/pools/{self.pool}")["vms"]))
                self.samples += 1
                self._stop.wait(0.5)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_12_parallel_creates_against_3_then_64_parallel_checkouts(db, libvirt_conn, tiny_image):  # type: ignore[no-untyped-def]
    port = free_port()
    env = reservation_env(port, "rush")
    with running_server(libvirt_conn, traversable_tmp(f"reservation-{db}-"), db, env) as server:
        make_pool(server, tiny_image, "rush", max_size=3)
        with Largest(server, "rush") as largest:
            created = rush(port, "/createVM/", 12)
            made = [success(b) for b in created if b["status"] == "success"]
            for body in created:
                if body["status"] == "error":
                    error(body, MAX_REACHED)
            assert len(made) == 3 and len({vm["vm_id"] for vm in made}) == 3, created
            with server.client() as c:
                pool = c.request("GET", "/pools/rush")
                assert {vm["instance_id"] for vm in pool["vms"]} == {vm["vm_id"] for vm in made}
                eventually(
                    lambda: c.request("GET", "/pools/rush")["counts"] == {"available": 3},
                    timeout=BOOT_TIMEOUT,
                    interval=1,
                    what="3 available VMs",
                )
                assert len(c.instances()) == 3, "a refused create left a VM behind"

            answers = rush(port, "/checkoutVM/", 64)
            won = [success(b) for b in answers if b["status"] == "success"]
            for body in answers:
                if body["status"] == "error":
                    error(body, NO_VM)
            assert len(won) == 3, f"{len(won)} checkouts succeeded"
            assert {vm["vm_id"] for vm in won} == {vm["vm_id"] for vm in made}
            assert len({vm["ip"] for vm in won}) == 3 and all(vm["vm_status"] == "checked-out" for vm in won)
            with server.client() as c:
                assert c.request("GET", "/pools/rush")["counts"] == {"checked-out": 3}
        assert largest.samples >= 3 and largest.seen == 3, f"the pool had {largest.seen} VMs"
        text = server.log.read_text(errors="replace")
        assert "Traceback" not in text, text[text.index("Traceback") - 500 :][:4000]
