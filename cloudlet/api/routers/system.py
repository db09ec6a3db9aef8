"""Server and driver information."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from cloudlet import __version__
from cloudlet.api.deps import CloudDep, Ctx
from cloudlet.api.schemas import DriverInfoPublic, ServerInfo
from cloudlet.errors import CloudletError

router = APIRouter(tags=["system"])


@router.get("/info", response_model=ServerInfo)
async def server_info(cloud: CloudDep, ctx: Ctx) -> ServerInfo:
    """Version, driver health (a stopped libvirtd shows here) and host capacity."""
    info = await run_in_threadpool(cloud.compute.info)
    host = None
    if info.ok:
        try:
            host = asdict(await run_in_threadpool(cloud.compute.host_resources))
        except CloudletError:
            host = None
    return ServerInfo(version=__version__, drivers=[DriverInfoPublic(**asdict(info))], host=host)
