"""The app factory: settings in, a FastAPI app out. The cloud (DB, drivers, services) is built in
the lifespan, so importing this module starts nothing."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

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
from cloudlet.api.urlsecrets import UrlSecretGuard
from cloudlet.config import Settings
from cloudlet.services.cloud import Cloud

log = logging.getLogger(__name__)
TokenCallback = Callable[[str], None]
ADMIN_TOKEN_FILE = "admin-token"


def save_admin_token(data_dir: Path, token: str) -> Path:
    """Keep the first start's admin token in ``<data_dir>/admin-token``, readable by the server's
    user only: a log is no place for it (only its hash is stored in the database)."""
    path = data_dir / ADMIN_TOKEN_FILE
    path.unlink(missing_ok=True)  # one left by an earlier database is made anew, with mode 0600
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return path


def token_to_file(data_dir: Path) -> TokenCallback:
    """An ``on_admin_token`` that saves the token and logs only where it is."""

    def save(token: str) -> None:
        path = save_admin_token(data_dir, token)
        log.warning("first start: the admin API token is in %s (mode 0600; only its hash is stored)", path)

    return save


API_PREFIX = "/api/v1"


def create_app(
    settings: Settings, *, cloud: Cloud | None = None, on_admin_token: TokenCallback | None = None
) -> FastAPI:
    deliver_token = on_admin_token or token_to_file(settings.data_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_cloud: Cloud = cloud if cloud is not None else await run_in_threadpool(Cloud.build, settings)
        token = await run_in_threadpool(the_cloud.start)
        if token:
            deliver_token(token)
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
    app.add_middleware(UrlSecretGuard)  # websockets with ?token= or ?ticket= are closed, unread
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
