"""The app factory: settings in, a FastAPI app out. The cloud (DB, drivers, services) is built in
the lifespan, so importing this module starts nothing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from cloudlet import __version__
from cloudlet.api import dashboard, errors
from cloudlet.api.audit import AuditMiddleware
from cloudlet.api.limits import BodyLimit, streamed_routes
from cloudlet.api.routers import (
    apply,
    auth,
    consoles,
    container_images,
    containers,
    events,
    host,
    images,
    instance_images,
    instances,
    networks,
    oidc,
    operations,
    pool_legacy,
    pools,
    projects,
    snapshots,
    storage,
    system,
    workspaces,
)
from cloudlet.config import Settings
from cloudlet.services.cloud import Cloud

log = logging.getLogger(__name__)
TokenCallback = Callable[[str], None]


def _log_token(token: str) -> None:
    log.warning("first start: admin API token (shown once, only its hash is stored): %s", token)


API_PREFIX = "/api/v1"


def create_app(
    settings: Settings, *, cloud: Cloud | None = None, on_admin_token: TokenCallback = _log_token
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_cloud: Cloud = cloud if cloud is not None else await run_in_threadpool(Cloud.build, settings)
        token = await run_in_threadpool(the_cloud.start)
        if token:
            on_admin_token(token)
        app.state.cloud = the_cloud
        try:
            yield
        finally:
            await run_in_threadpool(the_cloud.close)

    app = FastAPI(
        title="cloudlet",
        version=__version__,
        description="VMs and containers from one API. Authenticate with `Authorization: Bearer <token>`.",
        lifespan=lifespan,
    )
    errors.install(app)
    # Each module's router is included straight into the app: one level of included routers less
    # to match through on every request (FastAPI matches an included router's routes twice).
    routers = (
        system,
        auth,
        oidc,
        workspaces,
        operations,
        images,
        networks,
        instances,
        instance_images,
        containers,
        container_images,
        projects,
        pools,
        snapshots,
        storage,
        consoles,
        apply,
        host,
        events,
    )
    extra = (pools.leases_router, pool_legacy.router, storage.pools_router, storage.instance_router)
    api_routers = (*(m.router for m in routers), *extra)
    for router in api_routers:
        app.include_router(router, prefix=API_PREFIX)

    # Every body is limited before anything reads it, but for the routes that stream theirs.
    app.add_middleware(BodyLimit, streamed=streamed_routes(api_routers, API_PREFIX))
    app.add_middleware(AuditMiddleware)  # added after, so around it: refused calls are recorded too
    if settings.cors_origins:  # none by default: the dashboard is served from the same origin
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Cloudlet-Workspace"],
        )

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    dashboard.install(app)
    return app
