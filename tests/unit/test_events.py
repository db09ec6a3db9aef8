"""The event stream: a client sees its instance change as it happens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.unit.conftest import SimCloud

CreateVm = Callable[..., httpx.Response]


@pytest.mark.timeout(20)  # a missing event would block receive_json for good
def test_event_stream_reports_operation_and_instance_changes(sim: SimCloud, create_vm: CreateVm) -> None:
    with sim.client.websocket_connect("/api/v1/events", subprotocols=[f"bearer.{sim.token}"]) as ws:
        op_id = create_vm("web1").json()["id"]
        events: list[dict[str, Any]] = []
        while not any(
            e["type"] == "operation.updated"
            and e["data"]["id"] == op_id
            and e["data"]["status"] == "succeeded"
            for e in events
        ):
            events.append(ws.receive_json())
    states = [e["data"]["state"] for e in events if e["type"] == "instance.updated"]
    assert states[0] == "pending"
    assert "running" in states
    assert all(e["workspace_id"] == events[0]["workspace_id"] for e in events)


@pytest.mark.timeout(20)
def test_event_stream_accepts_the_bearer_header(sim: SimCloud, create_vm: CreateVm) -> None:
    with sim.client.websocket_connect("/api/v1/events", headers=sim.headers) as ws:
        create_vm("web1")
        event = ws.receive_json()
    assert event["type"] in ("operation.updated", "instance.updated")
