"""The OS Cloud API of the system cloudlet replaces, for its users' scripts.

Served on its own address (``oscloud_listen``, port 5000 in that system), bound to one workspace.
That system had no authentication and its scripts send none, so it is meant for loopback use: the
listener's guard (``cloudlet.compat.guard``) answers only loopback Host names (and the ones in
``oscloud_allowed_hosts``), wants ``oscloud_token`` as a bearer token when one is set, and the
server refuses to start it on another address without one. Replies keep that system's shapes:
``{"status": "ok"}`` or ``{"status": "error", "error": "..."}`` with a 4xx code; VMs have integer ids.
"""

from __future__ import annotations

import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from cloudlet.compat.guard import Listen, ListenerGuard, check_exposure, parse_listen
from cloudlet.config import Settings
from cloudlet.db.models import Image, Network, Workspace
from cloudlet.errors import CloudletError, Invalid, NotFound
from cloudlet.services.cloud import Cloud
from cloudlet.services.context import RequestContext
from cloudlet.services.instances import CreateRequest
from cloudlet.services.lifecycle import State
from cloudlet.services.networks import instance_nics
from cloudlet.services.sequence_ids import instance_for_number, number_instances, number_of

MIB, GIB = 1024**2, 1024**3
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": MIB, "G": GIB, "T": 1024**4}


def parse_size(text: str, what: str) -> int:
    """'2G', '512M', '10GiB' or a plain byte count -> bytes."""
    m = _SIZE.match(text)
    if not m:
        raise Invalid(f"invalid {what} {text!r}: use a number with K, M, G or T, e.g. 2G")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


class VMCreate(BaseModel):
    name: str
    image: str
    network: str = "default"
    mem_size: str = Field("512M", description="e.g. 2G")
    disk_size: str = Field("1G", description="e.g. 10G")


class VMRef(BaseModel):
    id: int


def oscloud_listen(settings: Settings) -> Listen:
    """Where the OS Cloud API listens; refused (``UnsafeListener``) off loopback without a token."""
    assert settings.oscloud_listen is not None
    listen = parse_listen(settings.oscloud_listen, setting="oscloud_listen")
    check_exposure(listen, settings.oscloud_token, setting="oscloud_listen", token_setting="oscloud_token")
    return listen


def _refusal(status: int, _code: str, message: str) -> Response:
    return JSONResponse({"status": "error", "error": message}, status_code=status)


def create_oscloud_app(main_app: FastAPI, settings: Settings) -> FastAPI:
    app = FastAPI(title="cloudlet OS Cloud API", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        ListenerGuard,
        listen=oscloud_listen(settings),
        allowed_hosts=settings.oscloud_allowed_hosts,
        token=settings.oscloud_token,
        error=_refusal,
    )

    def cloud() -> Cloud:
        c: Cloud = main_app.state.cloud
        return c

    def context() -> RequestContext:
        c = cloud()
        with c.db.reads() as s:
            ws = s.scalar(select(Workspace.id).where(Workspace.name == settings.oscloud_workspace))
        if ws is None:
            raise NotFound(f"workspace {settings.oscloud_workspace!r} does not exist")
        return RequestContext(principal="oscloud", workspace_id=ws)

    @app.exception_handler(CloudletError)
    async def error(_request: Request, exc: CloudletError) -> JSONResponse:
        status = exc.status if 400 <= exc.status < 500 else 400
        return JSONResponse({"status": "error", "error": exc.detail}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        msg = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"status": "error", "error": msg}, status_code=400)

    def instance_ref(ctx: RequestContext, number: int) -> str:
        inst = instance_for_number(cloud().db.sessions, ctx.workspace_id, number)
        if inst is None:
            raise NotFound(f"no VM with id {number}")
        return inst.id

    def wait_ok(ctx: RequestContext, op_id: str, timeout: float = 900) -> None:
        op = cloud().ops.wait(ctx, op_id, timeout)
        if op.status == "failed":
            raise Invalid((op.error or {}).get("detail", "operation failed"))
        if op.status != "succeeded":
            raise Invalid(f"timed out after {timeout:.0f}s")

    @app.get("/")
    def welcome() -> PlainTextResponse:
        return PlainTextResponse("Welcome to the OS Cloud API (served by cloudlet)\n")

    @app.get("/vm_list")
    def vm_list() -> list[dict[str, Any]]:
        ctx = context()
        return [
            {"id": n, "name": inst.name}
            for n, inst in number_instances(cloud().db.sessions, ctx.workspace_id)
        ]

    @app.post("/vm_create")
    def vm_create(body: VMCreate) -> dict[str, Any]:
        ctx = context()
        memory = parse_size(body.mem_size, "mem_size")
        disk = parse_size(body.disk_size, "disk_size")
        req = CreateRequest(
            name=body.name,
            image=body.image,
            network=body.network,
            memory=max(1, memory // MIB),
            disk=max(1, math.ceil(disk / GIB)),
        )
        instance_id, op_id = cloud().instances.create(ctx, req)
        wait_ok(ctx, op_id)
        return {"id": number_of(cloud().db.sessions, instance_id), "status": "ok"}

    @app.post("/vm_info")
    def vm_info(body: VMRef) -> dict[str, Any]:
        ctx = context()
        c = cloud()
        with c.db.reads() as s:
            inst = c.instances.get(s, ctx, instance_ref(ctx, body.id))
            nics = instance_nics(s, [inst.id]).get(inst.id)
            ip = nics[0][0].address if nics else None
            image = s.scalar(select(Image.name).where(Image.id == inst.image_id))
            network = s.scalar(select(Network.name).where(Network.id == inst.network_id))
        return {
            "disk_size": inst.disk_gb * GIB,
            "id": body.id,
            "ip": ip,
            "mem_size": inst.memory_mb * MIB,
            "name": inst.name,
            "network": network,
            "os": image,
            "state": "RUNNING" if inst.state == State.RUNNING else "STOPPED",
        }

    @app.post("/vm_stop")
    def vm_stop(body: VMRef) -> dict[str, str]:
        ctx = context()
        wait_ok(ctx, cloud().instances.action(ctx, instance_ref(ctx, body.id), "stop"))
        return {"status": "ok"}

    @app.post("/vm_start")
    def vm_start(body: VMRef) -> dict[str, str]:
        ctx = context()
        wait_ok(ctx, cloud().instances.action(ctx, instance_ref(ctx, body.id), "start"))
        return {"status": "ok"}

    return app
