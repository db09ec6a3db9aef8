"""The host itself: a web terminal on the server host for system admins (off by default)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, WebSocket

from cloudlet.api.streams import accept_or_refuse, serve_terminal
from cloudlet.errors import NotFound
from cloudlet.services.cloud import Cloud
from cloudlet.services.context import RequestContext
from cloudlet.services.host_terminal import HostTerminal, login_shell

router = APIRouter(prefix="/host", tags=["host"])
PATH = "/api/v1/host/terminal"


@router.websocket("/terminal")
async def host_terminal(websocket: WebSocket, rows: int = 24, cols: int = 80) -> None:
    """A login shell on the server host, as the server's user: system admins only, and only when
    the `host_terminal` setting is on. Same frames as the container exec terminal. Every session
    is audited (start, end, and a transcript of what it showed)."""
    cloud: Cloud = websocket.app.state.cloud
    if not (1 <= rows <= 1000 and 1 <= cols <= 1000):
        rows, cols = 24, 80
    session_id = str(uuid.uuid4())

    def open_(ctx: RequestContext) -> tuple[RequestContext, HostTerminal]:
        if not cloud.settings.host_terminal:
            raise NotFound("the host terminal is off on this server", code="host_terminal_disabled")
        ctx.require_admin("open the host terminal")
        transcript = cloud.settings.data_dir / "terminal-sessions" / f"{session_id}.log"
        terminal = HostTerminal(login_shell(), transcript, rows, cols)
        cloud.audit.record_session(ctx, "host_terminal_open", PATH, f"session={session_id}", 101)
        return ctx, terminal

    opened = await accept_or_refuse(websocket, open_)
    if opened is None:
        return
    ctx, terminal = opened
    try:
        await serve_terminal(websocket, terminal)
    finally:
        cloud.audit.record_session(ctx, "host_terminal_close", PATH, f"session={session_id}", 200)
