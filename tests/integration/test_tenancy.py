"""Users, sign-in, tokens, roles and quotas on a real server (SQLite and PostgreSQL), driven through
the CLI and the API; the quota race runs against the real database with real containers."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cloudlet.client import ApiError, Client
from tests.integration.conftest import CLOUDLET, next_subnet
from tests.integration.docker_images import BUSYBOX_REF, ensure_busybox_image

pytestmark = pytest.mark.integration
PASSWORD = "a long enough password"


def cli(server, home: Path, *args: str, stdin: str | None = None, token: str | None = None):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLET_")}
    env.update({"XDG_CONFIG_HOME": str(home), "COLUMNS": "200", "CLOUDLET_DATA_DIR": str(server.data_dir)})
    if server.database_url:
        env["CLOUDLET_DATABASE_URL"] = server.database_url
    if token:
        env.update({"CLOUDLET_URL": server.url, "CLOUDLET_TOKEN": token})
    return subprocess.run(
        [CLOUDLET, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_users_sign_in_and_work_within_their_role(server, tmp_path):  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    made = cli(server, home, "admin", "create-user", "alice", "--password-stdin", "--workspace", "default",
               "--role", "operator", stdin=PASSWORD + "\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    again = cli(server, home, "admin", "create-user", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert again.returncode == 2 and "name_taken" in again.stderr

    wrong = cli(server, home, "login", "--url", server.url, "--username", "alice", stdin="nope nope nope\n")
    assert wrong.returncode == 2 and "invalid_credentials" in wrong.stderr
    ok = cli(server, home, "login", "--url", server.url, "--username", "alice", stdin=PASSWORD + "\n")
    assert ok.returncode == 0, ok.stderr
    assert "refresh_token" in (home / "cloudlet" / "client.toml").read_text()

    listed = cli(server, home, "workspace", "list")
    assert listed.returncode == 0 and "default" in listed.stdout and "operator" in listed.stdout
    refused = cli(server, home, "member", "add", "bob", "--role", "viewer")
    assert refused.returncode == 2 and "permission_denied" in refused.stderr

    created = cli(server, home, "token", "create", "ci", "--role", "viewer", "--days", "1")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("clt_")
    assert cli(server, home, "vm", "list", token=secret).returncode == 0
    stop = cli(server, home, "vm", "stop", "anything", token=secret)
    assert stop.returncode == 2 and "permission_denied" in stop.stderr
    assert cli(server, home, "token", "revoke", "ci").returncode == 0
    after = cli(server, home, "vm", "list", token=secret)
    assert after.returncode == 2 and "invalid_token" in after.stderr

    export = cli(server, home, "audit", "export", token=server.token)
    assert export.returncode == 0 and '"action": "create_api_token"' in export.stdout


def test_twenty_concurrent_runs_against_a_quota_of_five(server, tmp_path):  # type: ignore[no-untyped-def]
    ensure_busybox_image()
    made = cli(
        server, tmp_path, "admin", "create-user", "boss", "--admin", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert made.returncode == 0, made.stderr
    with Client(server.url, "", timeout=120) as admin:
        admin.login("boss", PASSWORD)
        admin.request("POST", "/workspaces", json={"name": "quota-ws"})
        admin.request("PUT", "/workspaces/quota-ws/quota", json={"instances": 5})
        token = admin.request(
            "POST", "/tokens", json={"name": "quota", "role": "owner", "workspace": "quota-ws"}
        )["token"]
    with Client(server.url, token, timeout=120) as c:
        net = c.request(
            "POST", "/networks", json={"name": "quota-net", "cidr": next_subnet()}, params={"wait": 30}
        )
        assert net["status"] == "succeeded", net

    def run(i: int) -> str:
        with Client(server.url, token, timeout=120) as c:
            try:
                c.create_instance(kind="container", name=f"q{i}", image=BUSYBOX_REF, command=["sleep", "600"],
                                  network="quota-net")  # fmt: skip
            except ApiError as err:
                return err.code
            return "created"

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(run, range(20)))
    assert sorted(outcomes) == ["created"] * 5 + ["quota_exceeded"] * 15
    with Client(server.url, token, timeout=120) as c:
        assert c.request("GET", "/workspaces/quota-ws/quota")["usage"]["instances"] == 5
        for inst in c.instances():
            c.delete_instance(inst["id"], force=True)
        c.delete_network("quota-net")
