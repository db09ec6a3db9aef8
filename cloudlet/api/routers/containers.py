"""What only containers have: logs (paged, streamed, followed), exec (one-shot and a TTY over a
websocket); and resource stats (one sample, or live) of containers and VMs."""

from __future__ import annotations

import base64
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime

from fastapi import APIRouter, Query, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cloudlet.api.deps import CanEditInstances, CanViewInstances, CloudDep
from cloudlet.api.streams import (
    accept_or_refuse,
    drain,
    drain_batches,
    pump_until_disconnect,
    serve_terminal,
)
from cloudlet.drivers.base import ComputeDriver, InstanceStats
from cloudlet.drivers.containers import ContainerDriver, ContainerStats, ExecSession, Stream
from cloudlet.errors import Invalid, InvalidState
from cloudlet.services.cloud import Cloud
from cloudlet.services.context import RequestContext

router = APIRouter(prefix="/instances", tags=["containers"])

DEFAULT_SHELL = ["/bin/sh"]
VM_STATS_INTERVAL = 2.0  # seconds between the samples of a VM's live stats


def _instance(cloud: Cloud, ctx: RequestContext, ref: str, permission: str) -> tuple[str, str, str, str]:
    """(kind, state, id, name) of a workspace's instance, read once."""
    ctx.require(permission)
    with cloud.db.reads() as s:
        row = cloud.instances.get(s, ctx, ref)
        return row.kind, row.state, row.id, row.name


def running_container(
    cloud: Cloud, ctx: RequestContext, ref: str, *, running: bool, permission: str = "instance:view"
) -> tuple[ContainerDriver, str]:
    """The engine and the instance id of a workspace's container (running, when asked)."""
    kind, state, instance_id, name = _instance(cloud, ctx, ref, permission)
    if kind != "container":
        raise Invalid(f"{name!r} is a {kind}, not a container", code="not_a_container")
    if running and state != "running":
        raise InvalidState(f"container {name!r} is {state}, not running", code="not_running", state=state)
    return cloud.instances.container_engine(), instance_id


def running_instance(cloud: Cloud, ctx: RequestContext, ref: str) -> tuple[ComputeDriver, str]:
    """The driver and instance id of a workspace's running container or VM (for stats)."""
    kind, state, instance_id, name = _instance(cloud, ctx, ref, "instance:view")
    if state != "running":
        what, code = ("container", "not_running") if kind == "container" else ("VM", "instance_not_running")
        raise InvalidState(f"{what} {name!r} is {state}, not running", code=code, state=state)
    return cloud.instances.driver(kind), instance_id


def polled_stats(driver: ComputeDriver, instance_id: str, interval: float) -> Stream[InstanceStats]:
    """A VM's samples every ``interval`` seconds until it stops or the stream is closed."""
    stop = threading.Event()

    def samples() -> Iterator[InstanceStats]:
        while not stop.is_set():
            try:
                yield driver.stats(instance_id)
            except InvalidState:  # it stopped
                return
            if stop.wait(interval):
                return

    return Stream(samples(), stop.set)


class ExecRequest(BaseModel):
    command: list[str] = Field(min_length=1, examples=[["sh", "-c", "echo hello"]])
    tty: bool = False
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None


class ExecResponse(BaseModel):
    exit_code: int
    output: str = Field(description="stdout and stderr, interleaved, decoded as UTF-8.")
    output_base64: str | None = Field(None, description="The raw bytes, when they are not valid UTF-8.")
    truncated: bool = Field(description="True when output passed the 1 MiB limit and was cut.")


class StatsPublic(BaseModel):
    cpu_percent: float = Field(
        description="Containers: percent of one CPU (200 = two busy CPUs). "
        "VMs: percent of all its vCPUs (100 = every vCPU busy)."
    )
    online_cpus: int
    memory_bytes: int = Field(
        description="Containers: usage without the page cache, as `docker stats` shows. VMs: what "
        "the guest reports as used if it can, or else the host memory its QEMU process holds (guest "
        "pages it touched plus QEMU's own: it can pass the limit)."
    )
    memory_limit_bytes: int
    memory_percent: float
    network_rx_bytes: int
    network_tx_bytes: int
    block_read_bytes: int
    block_write_bytes: int
    pids: int = Field(description="Processes of a container; always 0 for a VM.")
    read_at: datetime


def stats_public(s: ContainerStats) -> StatsPublic:
    limit = s.memory_limit_bytes
    return StatsPublic(
        **vars(s),
        memory_percent=round(100.0 * s.memory_bytes / limit, 2) if limit else 0.0,
    )


@router.get(
    "/{ref}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "The log, streamed."}},
)
async def container_logs(
    cloud: CloudDep,
    ctx: CanViewInstances,
    ref: str,
    tail: int | None = Query(None, ge=0, le=1_000_000, description="Only the last N lines."),
    since: datetime | None = Query(None, description="Only lines from this time on."),
    until: datetime | None = Query(None, description="Only lines before this time (page backwards)."),
    timestamps: bool = Query(False, description="Prefix each line with its RFC 3339 time."),
    follow: bool = Query(False, description="Keep the response open and stream new lines."),
) -> StreamingResponse:
    """A container's output, streamed as it is read (never loaded whole). Page through a huge log
    with `tail` plus `until` (the time of the first line you have), or read it all in one stream."""

    def open_() -> Stream[bytes]:
        driver, instance_id = running_container(cloud, ctx, ref, running=False)
        return driver.logs(
            instance_id, tail=tail, since=since, until=until, timestamps=timestamps, follow=follow
        )

    stream = await run_in_threadpool(open_)

    async def body() -> AsyncIterator[bytes]:
        async for lines in drain_batches(stream):
            yield b"".join(lines)

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8")


@router.websocket("/{ref}/logs/ws")
async def container_logs_ws(
    websocket: WebSocket, ref: str, tail: int = 100, timestamps: bool = False
) -> None:
    """Follow a container's output live: text frames of output; closed (1000) when it stops."""
    cloud: Cloud = websocket.app.state.cloud

    def open_(ctx: RequestContext) -> Stream[bytes]:
        driver, instance_id = running_container(cloud, ctx, ref, running=False)
        return driver.logs(instance_id, tail=max(tail, 0), timestamps=timestamps, follow=True)

    stream = await accept_or_refuse(websocket, open_)
    if stream is None:
        return

    async def produce() -> None:
        async for lines in drain_batches(stream):  # a backlog leaves in a few big frames
            await websocket.send_text(b"".join(lines).decode("utf-8", "replace"))

    try:
        await pump_until_disconnect(websocket, produce)
    finally:
        stream.close()


@router.post("/{ref}/exec", response_model=ExecResponse)
def container_exec(cloud: CloudDep, ctx: CanEditInstances, ref: str, body: ExecRequest) -> ExecResponse:
    """Run a command in a running container to its end; returns its exit code and output."""
    driver, instance_id = running_container(cloud, ctx, ref, running=True, permission="instance:edit")
    result = driver.exec_run(
        instance_id, body.command, tty=body.tty, env=body.env, workdir=body.workdir, user=body.user
    )
    try:
        text, raw = result.output.decode("utf-8"), None
    except UnicodeDecodeError:
        text = result.output.decode("utf-8", "replace")
        raw = base64.b64encode(result.output).decode()
    return ExecResponse(
        exit_code=result.exit_code, output=text, output_base64=raw, truncated=result.truncated
    )


@router.websocket("/{ref}/exec/ws")
async def container_exec_ws(
    websocket: WebSocket, ref: str, rows: int = 24, cols: int = 80, user: str | None = None
) -> None:
    """An interactive terminal (what xterm.js needs). Query: `command` (repeat for each
    argument; default /bin/sh), `rows`, `cols`. Binary frames carry terminal bytes both ways; a
    text frame `{"type": "resize", "rows": R, "cols": C}` resizes, `{"type": "input", "data":
    "..."}` types text. When the command ends the server sends `{"type": "exit", "code": N}`
    and closes with 1000."""
    cloud: Cloud = websocket.app.state.cloud
    command = websocket.query_params.getlist("command") or DEFAULT_SHELL
    if not (1 <= rows <= 1000 and 1 <= cols <= 1000):
        rows, cols = 24, 80

    def open_(ctx: RequestContext) -> ExecSession:
        driver, instance_id = running_container(cloud, ctx, ref, running=True, permission="instance:edit")
        session = driver.exec_interactive(instance_id, command, rows=rows, cols=cols, user=user)
        target = f"ref={ref} command={' '.join(command)}"
        cloud.audit.record_session(ctx, "container_exec_terminal", websocket.url.path, target, 101)
        return session

    session = await accept_or_refuse(websocket, open_)
    if session is None:
        return

    await serve_terminal(websocket, session)


@router.get("/{ref}/stats", response_model=StatsPublic)
def container_stats(cloud: CloudDep, ctx: CanViewInstances, ref: str) -> StatsPublic:
    """One sample of a running container or VM: CPU %, memory, network and block IO (byte
    counters are totals since it started). 409 when it does not run."""
    driver, instance_id = running_instance(cloud, ctx, ref)
    return stats_public(driver.stats(instance_id))


@router.websocket("/{ref}/stats/ws")
async def container_stats_ws(websocket: WebSocket, ref: str) -> None:
    """A JSON sample about every second for a container, every 2 seconds for a VM, until it stops
    or the client leaves."""
    cloud: Cloud = websocket.app.state.cloud

    def open_(ctx: RequestContext) -> Stream[ContainerStats]:
        driver, instance_id = running_instance(cloud, ctx, ref)
        if isinstance(driver, ContainerDriver):
            return driver.stats_stream(instance_id)
        return polled_stats(driver, instance_id, VM_STATS_INTERVAL)

    stream = await accept_or_refuse(websocket, open_)
    if stream is None:
        return

    async def produce() -> None:
        async for sample in drain(stream):
            await websocket.send_text(stats_public(sample).model_dump_json())

    try:
        await pump_until_disconnect(websocket, produce)
    finally:
        stream.close()
