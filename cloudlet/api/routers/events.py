"""The live event stream over a websocket."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from cloudlet.api.deps import websocket_context
from cloudlet.errors import CloudletError
from cloudlet.services.cloud import Cloud

router = APIRouter(tags=["events"])


@router.websocket("/events")
async def events(websocket: WebSocket) -> None:
    """Stream JSON events (instance state changes, operation progress) of the caller's workspace."""
    try:
        ctx = await run_in_threadpool(websocket_context, websocket)
    except CloudletError as err:
        await websocket.close(code=4401 if err.status == 401 else 4403, reason=err.detail[:120])
        return
    cloud: Cloud = websocket.app.state.cloud
    await websocket.accept()
    sub = cloud.bus.subscribe({ctx.workspace_id})

    async def pump() -> None:
        while True:
            event = await sub.get()
            await websocket.send_json(event.to_json())

    sender = asyncio.create_task(pump())
    try:
        while True:  # the client may send pings; a disconnect ends the stream
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        sub.close()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
