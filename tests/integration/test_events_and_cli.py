"""The events websocket streams what happens, and the CLI drives the server end to end."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from websockets.sync.client import connect

from tests.integration.conftest import CLOUDLET, import_tiny

pytestmark = pytest.mark.integration


def test_events_stream_operations_and_states(sqlite_server, tiny_image):  # type: ignore[no-untyped-def]
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        ws_url = sqlite_server.url.replace("http", "ws") + "/api/v1/events"
        with connect(ws_url, additional_headers={"Authorization": f"Bearer {sqlite_server.token}"}) as ws:
            c.create_instance(name="evt1", image="tiny", memory=128)
            seen: list[dict] = []

            def create_ops() -> list[dict]:
                return [
                    e
                    for e in seen
                    if e["type"] == "operation.updated" and e["data"]["kind"] == "instance.create"
                ]

            def running() -> bool:
                return any(e["type"] == "instance.updated" and e["data"]["state"] == "running" for e in seen)

            while not (running() and any(e["data"]["status"] == "succeeded" for e in create_ops())):
                seen.append(json.loads(ws.recv(timeout=60)))
            statuses = [e["data"]["status"] for e in create_ops()]
            assert statuses[0] == "pending" and "running" in statuses and statuses[-1] == "succeeded"
            states = [e["data"]["state"] for e in seen if e["type"] == "instance.updated"]
            assert states[0] == "pending" and "provisioning" in states and states[-1] == "running"
        c.delete_instance("evt1", force=True)


def test_events_refuse_bad_tokens(sqlite_server):  # type: ignore[no-untyped-def]
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    ws_url = sqlite_server.url.replace("http", "ws") + "/api/v1/events"
    wrong = {"Authorization": "Bearer clt_wrong"}
    with pytest.raises((ConnectionClosed, InvalidStatus)), connect(ws_url, additional_headers=wrong) as ws:
        ws.recv(timeout=5)


def _cli(server, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "CLOUDLET_URL": server.url, "CLOUDLET_TOKEN": server.token, "COLUMNS": "200"}
    return subprocess.run(
        [CLOUDLET, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_cli_round_trip(sqlite_server, tiny_image, ssh_key):  # type: ignore[no-untyped-def]
    key, pub = ssh_key
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
    out = _cli(sqlite_server, "vm", "create", "cli1", "--image", "tiny", "--memory", "128", "--ssh-key", pub)
    assert out.returncode == 0, out.stderr
    assert "cli1 is running at" in out.stdout
    listing = _cli(sqlite_server, "vm", "list")
    assert listing.returncode == 0 and "cli1" in listing.stdout and "running" in listing.stdout, (
        listing.stdout
    )
    shown = _cli(sqlite_server, "vm", "show", "cli1")
    assert "hostname" in shown.stdout and "cli1" in shown.stdout
    built = _cli(sqlite_server, "image", "build-tiny", "--name", "tiny-upload")  # cached build, then upload
    assert built.returncode == 0, built.stderr
    images = _cli(sqlite_server, "image", "list").stdout
    assert "tiny-upload" in images and "ready" in images
    assert "default" in _cli(sqlite_server, "network", "list").stdout

    ssh = _cli(sqlite_server, "vm", "ssh", "cli1", "-i", str(key), "--", "echo", "hello-from-guest")
    # The guest may still be booting its SSH server: retry a little.
    for _ in range(40):
        if ssh.returncode == 0:
            break
        import time

        time.sleep(2)
        ssh = _cli(sqlite_server, "vm", "ssh", "cli1", "-i", str(key), "--", "echo", "hello-from-guest")
    assert ssh.returncode == 0 and "hello-from-guest" in ssh.stdout, ssh.stderr

    missing = _cli(sqlite_server, "vm", "show", "nope")
    assert missing.returncode != 0 and "not found" in missing.stderr
    bad = _cli(sqlite_server, "vm", "start", "cli1")
    assert bad.returncode != 0 and "cannot start" in bad.stderr
    assert _cli(sqlite_server, "vm", "delete", "cli1", "--force").returncode == 0
    assert "cli1" not in _cli(sqlite_server, "vm", "list").stdout


def test_cli_login_saves_url_and_token(sqlite_server, tmp_path):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDLET_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLOUDLET, *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    bad = run("login", "--url", sqlite_server.url, "--token", "clt_not-a-real-token")
    assert bad.returncode != 0 and "invalid" in bad.stderr.lower()
    assert not (tmp_path / "cloudlet" / "client.toml").exists()
    good = run("login", "--url", sqlite_server.url, "--token", sqlite_server.token)
    assert good.returncode == 0, good.stderr
    saved = tmp_path / "cloudlet" / "client.toml"
    assert saved.stat().st_mode & 0o077 == 0, "the token file is private"
    info = run("info")
    assert info.returncode == 0 and "libvirt" in info.stdout and "ok" in info.stdout
