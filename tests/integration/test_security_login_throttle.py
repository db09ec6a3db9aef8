"""Issue 13, login throttling against a real server process (uvicorn as `cloudlet server` runs it):
an X-Forwarded-For header sent from loopback picks neither the throttled nor the audited address
unless `trusted_proxies` names the sender; behind a trusted proxy, failures from one client address
do not stop the same account signing in from another."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import eventually
from tests.integration.conftest import Server, running_server, traversable_tmp

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
ATTACKER, ALICE_HOME = "203.0.113.9", "198.51.100.20"  # header values only: nothing is sent there
LOGIN = "/api/v1/auth/login"


def login(server: Server, password: str, forwarded_for: str) -> httpx.Response:
    return httpx.post(
        server.url + LOGIN,
        json={"username": "alice", "password": password},
        headers={"X-Forwarded-For": forwarded_for},
        timeout=30,
    )


def admin(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {server.token}"})


def make_alice(server: Server) -> None:
    with admin(server) as c:
        assert c.post("/users", json={"username": "alice", "password": PASSWORD}).status_code == 201


def audited_sources(server: Server, count: int) -> list[str]:
    """The source addresses of the audit log's sign-in entries, once ``count`` are written."""

    def entries() -> list[dict[str, Any]] | None:
        with admin(server) as c:
            rows = [r for r in c.get("/audit", params={"action": "login"}).json() if r["path"] == LOGIN]
        return rows if len(rows) >= count else None

    return [r["source"] for r in eventually(entries, timeout=30, what="the sign-ins in the audit log")]


@pytest.fixture
def server_with(libvirt_conn) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    def start(tmp: Path, **env: str) -> Any:
        return running_server(libvirt_conn, tmp, extra_env={"CLOUDLET_LOGIN_ATTEMPTS": "2", **env})

    yield start


def test_forwarded_for_from_loopback_is_not_believed_by_default(server_with) -> None:  # type: ignore[no-untyped-def]
    with server_with(traversable_tmp("throttle-default-")) as server:
        make_alice(server)
        for _ in range(2):
            assert login(server, "wrong password!", ATTACKER).status_code == 401
        # "another address" by header only: it is the same client, still paused
        paused = login(server, PASSWORD, ALICE_HOME)
        assert paused.status_code == 429 and paused.json()["code"] == "too_many_attempts"
        assert int(paused.headers["Retry-After"]) >= 1
        assert set(audited_sources(server, 3)) == {"127.0.0.1"}


def test_a_trusted_proxys_clients_are_told_apart(server_with) -> None:  # type: ignore[no-untyped-def]
    env = {"CLOUDLET_TRUSTED_PROXIES": json.dumps(["127.0.0.1"])}
    with server_with(traversable_tmp("throttle-proxy-"), **env) as server:
        make_alice(server)
        for _ in range(2):
            assert login(server, "wrong password!", ATTACKER).status_code == 401
        assert login(server, PASSWORD, ATTACKER).status_code == 429  # the attacker's address waits
        signed_in = login(server, PASSWORD, ALICE_HOME)  # alice, from home, is not held up
        assert signed_in.status_code == 200 and signed_in.json()["access_token"]
        sources = audited_sources(server, 4)
        assert sources.count(ATTACKER) == 3 and sources.count(ALICE_HOME) == 1
