"""The host terminal: off by default, system admins only, a real shell under a pty, audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.websockets import WebSocketDisconnect

from cloudlet.db.models import AuditEntry
from cloudlet.db.session import transaction
from cloudlet.services import users
from tests.unit.conftest import SimCloud, sim_cloud


def test_off_unless_enabled(sim: SimCloud) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as info,
        sim.client.websocket_connect("/api/v1/host/terminal", headers=sim.headers),
    ):
        pass
    assert info.value.code == 4404


def test_a_system_admin_gets_a_shell_and_it_is_audited(tmp_path: Path) -> None:
    with sim_cloud(tmp_path, host_terminal=True) as sim:
        with sim.client.websocket_connect(
            "/api/v1/host/terminal?rows=30&cols=100", headers=sim.headers
        ) as ws:
            ws.send_text(json.dumps({"type": "resize", "rows": 40, "cols": 120}))
            ws.send_bytes(b"stty size; echo marker-$((40+2)); exit 7\n")
            output, ended = b"", None
            while ended is None:
                message = ws.receive()
                if message.get("bytes"):
                    output += message["bytes"]
                elif message.get("text"):
                    ended = json.loads(message["text"])
            assert b"40 120" in output and b"marker-42" in output, output
            assert ended == {"type": "exit", "code": 7}
        sim.cloud.audit.flush()
        with sim.cloud.db.reads() as s:
            actions = [e.action for e in s.scalars(select(AuditEntry).order_by(AuditEntry.at))]
        assert "host_terminal_open" in actions and "host_terminal_close" in actions
        (transcript,) = (tmp_path / "terminal-sessions").glob("*.log")
        assert b"marker-42" in transcript.read_bytes()
        assert transcript.stat().st_mode & 0o077 == 0

        with transaction(sim.cloud.db.sessions) as s:
            users.create_user(s, "plain", "a long enough password")
        pair = sim.client.post(
            "/api/v1/auth/login", json={"username": "plain", "password": "a long enough password"}
        )
        access = pair.json()["access_token"]
        with (
            pytest.raises(WebSocketDisconnect) as info,
            sim.client.websocket_connect("/api/v1/host/terminal", subprotocols=[f"bearer.{access}"]),
        ):
            pass
        assert info.value.code == 4403
