"""The OS Cloud API of the system cloudlet replaces, for its users' scripts and lab sheets.

Served on its own address (``oscloud_listen``, port 5000 in that system), bound to one workspace
(``oscloud_workspace``). That system had no authentication and its scripts send none, so it is
meant for loopback use: the listener's guard (``cloudlet.compat.guard``) answers only loopback
Host names (and the ones in ``oscloud_allowed_hosts``), wants ``oscloud_token`` as a bearer token
when one is set, and the server refuses to start it on another address without one.

Its routes and answers are OS Cloud's (``oscloud_wire`` for the wire format, ``oscloud_vms`` for
what each call does): ``GET /``, ``GET /vm_list``, ``POST /vm_create``, ``/vm_info``, ``/vm_stop``,
``/vm_start``. Every refusal is ``{"status": "error", "error_msg": ...}`` (with ``error`` and
``code`` besides), with HTTP 200 as OS Cloud answered; only what Flask itself refused before
OS Cloud's code ran keeps its status (404 unknown route, 405 method, 415 not JSON, 400 bad JSON),
and so do the guard's 401/403.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloudlet.compat.guard import Listen, ListenerGuard, check_exposure, parse_listen
from cloudlet.compat.oscloud_vms import NewVM, OSCloudVMs
from cloudlet.compat.oscloud_wire import (
    FlaskJSON,
    Refusal,
    json_object,
    parse_size,
    refusal,
    required,
    ssh_keys,
    text_field,
    vm_number,
)
from cloudlet.config import Settings
from cloudlet.errors import CloudletError

log = logging.getLogger(__name__)


def oscloud_listen(settings: Settings) -> Listen:
    """Where the OS Cloud API listens; refused (``UnsafeListener``) off loopback without a token."""
    assert settings.oscloud_listen is not None
    listen = parse_listen(settings.oscloud_listen, setting="oscloud_listen")
    check_exposure(listen, settings.oscloud_token, setting="oscloud_listen", token_setting="oscloud_token")
    return listen


def _guard_refusal(status: int, code: str, message: str) -> Response:
    return refusal(message, code, status)


def create_oscloud_app(main_app: FastAPI, settings: Settings) -> FastAPI:
    app = FastAPI(
        title="cloudlet OS Cloud API",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        default_response_class=FlaskJSON,
    )
    app.add_middleware(
        ListenerGuard,
        listen=oscloud_listen(settings),
        allowed_hosts=settings.oscloud_allowed_hosts,
        token=settings.oscloud_token,
        error=_guard_refusal,
    )

    def vms() -> OSCloudVMs:
        return OSCloudVMs(main_app.state.cloud, settings.oscloud_workspace)

    @app.exception_handler(Refusal)
    async def refused(_request: Request, exc: Refusal) -> Response:
        return refusal(exc.message, exc.code, exc.status)

    @app.exception_handler(CloudletError)
    async def cloudlet_error(_request: Request, exc: CloudletError) -> Response:
        return refusal(exc.detail, exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> Response:
        msg = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return refusal(msg, "validation_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        path = request.url.path[:200]
        message = {
            404: f"the OS Cloud API has no {path}",
            405: f"{request.method} is not how {path} is called",
        }.get(exc.status_code, str(exc.detail))
        return refusal(message, "not_found" if exc.status_code == 404 else "http_error", exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> Response:
        log.error("OS Cloud API: unexpected error", exc_info=exc)
        return refusal("internal error (the server log says more)", "internal_error")

    @app.get("/", response_class=PlainTextResponse)
    def welcome() -> str:
        """What `curl localhost:5000` showed."""
        return "Welcome to OS Cloud!\n"

    @app.get("/vm_list")
    def vm_list() -> list[dict[str, Any]]:
        """Every VM of the workspace as {id, name}, by id."""
        return vms().list()

    @app.post("/vm_create")
    def vm_create(body: dict[str, Any] = Depends(json_object)) -> dict[str, Any]:
        """Make a VM and wait until it runs."""
        # OS Cloud's order: every field present first, then the sizes, then the rest
        name, image, network, mem_size, disk_size = (
            required(body, field) for field in ("name", "image", "network", "mem_size", "disk_size")
        )
        vm = NewVM(
            mem_bytes=parse_size(mem_size, "mem_size"),
            disk_bytes=parse_size(disk_size, "disk_size"),
            name=text_field(name),
            image=text_field(image),
            network=text_field(network),
            ssh_keys=ssh_keys(body.get("ssh_key")),
        )
        return {"id": vms().create(vm), "status": "ok"}

    @app.post("/vm_info")
    def vm_info(body: dict[str, Any] = Depends(json_object)) -> dict[str, Any]:
        """A VM's name, sizes in bytes, image, network, address and state."""
        return vms().info(*vm_number(body))

    @app.post("/vm_stop")
    def vm_stop(body: dict[str, Any] = Depends(json_object)) -> dict[str, str]:
        """Stop a VM and wait until it is stopped."""
        vms().stop(*vm_number(body))
        return {"status": "ok"}

    @app.post("/vm_start")
    def vm_start(body: dict[str, Any] = Depends(json_object)) -> dict[str, str]:
        """Start a VM and wait until it runs."""
        vms().start(*vm_number(body))
        return {"status": "ok"}

    return app
