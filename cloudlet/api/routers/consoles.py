"""A running VM's consoles: /instances/{vm}/console/... (serial and VNC websockets, one-time tickets
for clients that cannot send headers, typed text, screenshots). All need `instance:edit`.

A ticket travels as the websocket subprotocol ``ticket.<ticket>``, never in the URL (URLs end up
in access logs); it is not echoed back when the socket is accepted."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response, WebSocket
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cloudlet.api.deps import CanEditInstances, CloudDep, offered_secret, websocket_context
from cloudlet.api.streams import accept_or_refuse, in_stream_thread, parse_json, pump_until_disconnect
from cloudlet.drivers.base import ConsoleStream
from cloudlet.services.cloud import Cloud
from cloudlet.services.consoles import MAX_TYPED_CHARS, ConsoleKind, Target
from cloudlet.services.context import RequestContext

router = APIRouter(prefix="/instances/{ref}/console", tags=["consoles"])

TICKET_PROTOCOL = "ticket."


class TicketRequest(BaseModel):
    console: ConsoleKind = Field(ConsoleKind.VNC, description="The console the ticket opens.")


class TicketPublic(BaseModel):
    ticket: str = Field(
        description="Offer it as the websocket subprotocol `ticket.<ticket>`; works once, for this VM "
        "and console only."
    )
    console: ConsoleKind
    expires_at: datetime
    path: str = Field(
        description="The websocket to open with it.", examples=["/api/v1/instances/web/console/vnc"]
    )


class TypeRequest(BaseModel):
    text: str = Field(
        min_length=1,
        max_length=MAX_TYPED_CHARS,
        description="Printable ASCII, newline (Enter) and tab, typed on a US keyboard.",
        examples=["root\n"],
    )


class TypeResult(BaseModel):
    keys: int = Field(description="Key presses sent (one per character).")


@router.post("/ticket", response_model=TicketPublic)
def console_ticket(
    ref: str, cloud: CloudDep, ctx: CanEditInstances, body: TicketRequest | None = None
) -> TicketPublic:
    """A one-time ticket (valid 30 s) to open a running VM's VNC (default) or serial console."""
    console = body.console if body else ConsoleKind.VNC
    ticket = cloud.consoles.issue_ticket(ctx, ref, console)
    return TicketPublic(
        ticket=ticket.secret,
        console=console,
        expires_at=ticket.expires_at,
        path=f"/api/v1/instances/{ref}/console/{console.value}",
    )


@router.post("/type", response_model=TypeResult)
def console_type(ref: str, body: TypeRequest, cloud: CloudDep, ctx: CanEditInstances) -> TypeResult:
    """Type text on a running VM's keyboard (US layout); unmappable characters are a 422."""
    return TypeResult(keys=cloud.consoles.type_text(ctx, ref, body.text))


@router.get(
    "/screenshot",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The screen as PNG."}},
)
def console_screenshot(ref: str, cloud: CloudDep, ctx: CanEditInstances) -> Response:
    """What a running VM's screen shows now, as PNG."""
    png = cloud.consoles.screenshot(ctx, ref)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


async def _open(
    websocket: WebSocket,
    ref: str,
    kind: ConsoleKind,
    ticket: str | None,
    subprotocols: tuple[str, ...] = (),
) -> ConsoleStream | None:
    """Authenticate by ticket (when given) or as every websocket does, open the console, accept."""
    cloud: Cloud = websocket.app.state.cloud
    granted: list[Target] = []

    def by_ticket(ws: WebSocket) -> RequestContext:
        source = ws.client.host if ws.client else None
        granted.append(cloud.consoles.redeem(ticket or "", ref, kind, source))
        return granted[0].ctx

    def open_(ctx: RequestContext) -> ConsoleStream:
        target = granted[0] if granted else cloud.consoles.target(ctx, ref)
        if kind is ConsoleKind.VNC:
            stream = cloud.consoles.open_vnc(target)
        else:
            stream = cloud.consoles.open_serial(target)
        how = "ticket" if granted else "token"
        target_text = f"ref={ref} instance={target.instance_id} auth={how}"
        cloud.audit.record_session(ctx, f"vm_{kind.value}_console", websocket.url.path, target_text, 101)
        return stream

    authenticate = by_ticket if ticket is not None else websocket_context
    return await accept_or_refuse(websocket, open_, authenticate=authenticate, subprotocols=subprotocols)


async def _bridge(websocket: WebSocket, stream: ConsoleStream, *, text_input: bool) -> None:
    """Guest bytes to the client as binary frames; the client's frames to the guest. Ends when
    either side does (a stopped guest closes the socket with 1000); the stream is closed then."""

    async def produce() -> None:
        while data := await in_stream_thread(stream.read):
            await websocket.send_bytes(data)

    async def on_message(message: MutableMapping[str, Any]) -> None:
        data = message.get("bytes")
        if data is None and text_input:
            data = serial_input(message.get("text") or "")
        if data:
            await in_stream_thread(stream.write, data)

    try:
        await pump_until_disconnect(websocket, produce, on_message)
    finally:
        await run_in_threadpool(stream.close)


def serial_input(text: str) -> bytes:
    """A text frame for the serial line: the exec terminal's control messages are understood
    (`input` types its data; `resize` means nothing to a serial line), any other text is typed
    as it is (what xterm.js sends)."""
    request = parse_json(text) if text.startswith("{") else None
    if request is not None and request.get("type") in ("input", "resize"):
        data = request.get("data")
        return data.encode() if request["type"] == "input" and isinstance(data, str) else b""
    return text.encode()


@router.websocket("/serial")
async def serial_console(websocket: WebSocket, ref: str) -> None:
    """The VM's first serial port (what xterm.js needs), taken over from any other client.
    Authenticate like every websocket (token header, `bearer.<token>` subprotocol, session cookie)
    or with a one-time ticket issued for `serial`, offered as the subprotocol `ticket.<ticket>`.
    Binary frames carry the guest's output; binary or text frames from the client go to the
    guest. The socket closes with 1000 when the VM stops."""
    ticket = offered_secret(websocket, TICKET_PROTOCOL)
    stream = await _open(websocket, ref, ConsoleKind.SERIAL, ticket, subprotocols=("binary",))
    if stream is not None:
        await _bridge(websocket, stream, text_input=True)


@router.websocket("/vnc")
async def vnc_console(websocket: WebSocket, ref: str) -> None:
    """The VM's screen for noVNC: raw RFB in binary frames, both ways, straight from the VM's VNC
    server (security type None: the ticket was the authentication). Needs a one-time ticket
    issued for `vnc`, offered as the subprotocol `ticket.<ticket>` (next to `binary`, which noVNC
    offers and which is accepted). A used, expired or foreign ticket is refused."""
    ticket = offered_secret(websocket, TICKET_PROTOCOL)
    if ticket is None:
        reason = "missing_ticket: offer the VNC console ticket as the subprotocol ticket.<ticket>"
        await websocket.close(code=4401, reason=reason)
        return
    stream = await _open(websocket, ref, ConsoleKind.VNC, ticket, subprotocols=("binary",))
    if stream is not None:
        await _bridge(websocket, stream, text_input=False)
