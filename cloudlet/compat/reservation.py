"""The API of the "Virtual Machine Reservation System" cloudlet replaces, for its users' scripts.

That system answered six GET routes on port 5000, without credentials: ``/createVM/``,
``/checkoutVM/``, ``/checkinVM/?unique_id=ID&ip=IP``, ``/deleteVM/?unique_id=ID&ip=IP``,
``/getVM/?unique_id=ID`` and ``/getVMStatus/?unique_id=ID``, each with HTTP 200 and
``{"status": "success"|"error", "data": {"vm_id", "ip", "vm_status"} or null, "message": null or
the reason}``, in its own words (the constants below). Its VMs were creating, available,
checked-out or error. Here one of cloudlet's reservation pools stands behind them: ``vm_id`` is the
VM's instance id, ``createVM`` adds a VM up to the pool's max_size and answers at once with
``creating`` (the pool controller makes it available once it boots and answers), ``checkoutVM`` is
the pool's atomic checkout.

One router (``reservation_router``) serves these routes in two places:

- on a listener of their own (``reservation_listen``, bound to the pool ``reservation_pool``):
  no credentials, as the original, so loopback only behind ``cloudlet.compat.guard``; every
  answer is HTTP 200, as the original's;
- under ``/api/v1/pools/{pool}/legacy/`` for API-token holders, on pools with ``legacy_api``: the
  same routes and bodies, with the HTTP status that fits (404, 409...), and the caller's rights.

The routes change things on GET, as the original's did; every such call is audited here (the
audit middleware records only POST, PUT, PATCH and DELETE).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloudlet.compat.guard import Listen, ListenerGuard, UnsafeListener, check_exposure, parse_listen
from cloudlet.config import Settings
from cloudlet.db.models import Pool, PoolMember, Workspace
from cloudlet.errors import CloudletError, Conflict, NotFound, Unauthorized
from cloudlet.services.cloud import Cloud
from cloudlet.services.context import RequestContext

# The original's messages, word for word.
MAX_REACHED = "Error: Maximum VM Count reached"
NO_VM = "No VMs currently available, please try after some time"
NO_SUCH_ID = "Could not find a vm with given unique ID"  # getVM, getVMStatus
NO_SUCH_VM = "Could not find a vm with given details"  # checkinVM, deleteVM

VmStatus = Literal["creating", "available", "checked-out", "error"]
# A pool VM's status in the original's words. A resetting VM is on its way out (deleted, or
# checked in to a pool that resets): the original had deleted its row by then, so it is not found.
VM_STATUS: dict[str, VmStatus] = {
    "provisioning": "creating",
    "available": "available",
    "checked-out": "checked-out",
    "error": "error",
}
ID_LENGTH = 64  # longer ids and addresses name no VM: not looked up

T = TypeVar("T")


class VmData(BaseModel):
    vm_id: str = Field(description="The VM's id (cloudlet's instance id).")
    ip: str | None = Field(description="Its IP address.")
    vm_status: Literal["creating", "available", "checked-out", "error", "deleted"] = Field(
        description="creating, available, checked-out or error; deleted in the answer of deleteVM, and "
        "of checkinVM when the pool does not reuse returned VMs (on_checkin reset or destroy)."
    )


class StatusData(BaseModel):
    vm_status: VmStatus


class Reply(BaseModel, Generic[T]):
    """Every answer, successes and refusals: ``data`` is null and ``message`` says why on errors."""

    status: Literal["success", "error"]
    data: T | None
    message: str | None


@dataclass(frozen=True)
class Target:
    """Whom a request acts for, and on which pool."""

    cloud: Cloud
    ctx: RequestContext
    pool_id: str


def success(data: BaseModel) -> dict[str, Any]:
    return {"status": "success", "data": data.model_dump(), "message": None}


def refusal(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"status": "error", "data": None, "message": message}
    return JSONResponse(body, status_code=status, headers=headers)


class EnvelopedRoute(APIRoute):
    """A route whose refusals, from its dependencies and its handler, are answered in the envelope:
    with their own HTTP status (``real_status``), or with 200 as the original system did. A 401 of
    /api/v1 stays the problem+json every /api/v1 route answers an unauthenticated caller."""

    real_status: ClassVar[bool] = True

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        real_status = self.real_status

        async def enveloped(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthorized:
                raise
            except CloudletError as err:
                headers = {}
                if "retry_after" in err.extra:
                    headers["Retry-After"] = str(err.extra["retry_after"])
                return refusal(err.status if real_status else 200, err.detail, headers)
            except RequestValidationError as err:
                message = "; ".join(str(e.get("msg", "")) for e in err.errors())
                return refusal(422 if real_status else 200, message)

        return enveloped


class ListenerRoute(EnvelopedRoute):
    real_status = False


TargetDep = Callable[..., Target]
UniqueId = Annotated[str | None, Query(description="The VM's vm_id.")]
Ip = Annotated[str | None, Query(description="The VM's IP address: it must be the VM's.")]


def reservation_router(target: TargetDep, *, real_status: bool, prefix: str = "") -> APIRouter:
    """The six routes, acting for whom and on the pool that ``target`` (a dependency) names."""
    refusals: dict[int | str, dict[str, Any]] = {
        status: {"model": Reply[None], "description": what}
        for status, what in {
            403: "Not allowed",
            404: "No such pool or VM (or the legacy API is off for this pool)",
            409: "Maximum VM Count reached, no VM available, or the VM is in another state",
        }.items()
    }
    router = APIRouter(
        prefix=prefix,
        route_class=EnvelopedRoute if real_status else ListenerRoute,
        tags=["pools (reservation system API)"],
        responses=refusals if real_status else None,
    )
    # a default, not an Annotated alias: the annotations are strings resolved in this module's
    # globals, where a local alias is not
    on_pool = Depends(target)

    @router.get("/createVM/", response_model=Reply[VmData], operation_id="reservation_createVM")
    def createVM(request: Request, on: Target = on_pool) -> dict[str, Any]:
        """Add a VM to the pool, up to its max_size; it is `creating` until it boots and answers."""
        with audited(on, request, "createVM"):
            try:
                (vm_id,) = on.cloud.pools.add_vms(on.ctx, on.pool_id, 1)
            except Conflict as err:
                if err.code == "max_vms_reached":
                    raise Conflict(MAX_REACHED, code=err.code) from None
                raise
            member = find(on, vm_id)
            return success(vm_data(member) if member else VmData(vm_id=vm_id, ip=None, vm_status="creating"))

    @router.get("/checkoutVM/", response_model=Reply[VmData], operation_id="reservation_checkoutVM")
    def checkoutVM(request: Request, on: Target = on_pool) -> dict[str, Any]:
        """Check out an available VM (the pool's lease_default applies)."""
        with audited(on, request, "checkoutVM"):
            got = on.cloud.pools.checkout(on.ctx, on.pool_id)  # its refusal is NO_VM, word for word
            return success(VmData(vm_id=got.instance_id, ip=got.ip, vm_status="checked-out"))

    @router.get("/checkinVM/", response_model=Reply[VmData], operation_id="reservation_checkinVM")
    def checkinVM(
        request: Request, unique_id: UniqueId = None, ip: Ip = None, on: Target = on_pool
    ) -> dict[str, Any]:
        """Give a checked-out VM back, named by its vm_id and its IP."""
        with audited(on, request, "checkinVM", unique_id):
            member = find(on, unique_id, ip, by_ip=True)
            if member is None:
                raise NotFound(NO_SUCH_VM, code="vm_not_found")
            if member.status != "checked-out":
                raise Conflict(cannot("check-in", member), code="not_checked_out")
            try:
                on.cloud.pools.checkin(on.ctx, on.pool_id, member.instance_id)
            except (NotFound, Conflict):  # changed meanwhile: say what it is now
                raise refused(on, member, "check-in", "not_checked_out") from None
            after = find(on, member.instance_id)
            status = vm_data(after).vm_status if after is not None else "deleted"
            return success(VmData(vm_id=member.instance_id, ip=member.ip, vm_status=status))

    @router.get("/deleteVM/", response_model=Reply[VmData], operation_id="reservation_deleteVM")
    def deleteVM(
        request: Request, unique_id: UniqueId = None, ip: Ip = None, on: Target = on_pool
    ) -> dict[str, Any]:
        """Delete an available VM (or one in error), named by its vm_id and its IP."""
        with audited(on, request, "deleteVM", unique_id):
            member = find(on, unique_id, ip, by_ip=True)
            if member is None:
                raise NotFound(NO_SUCH_VM, code="vm_not_found")
            if member.status not in ("available", "error"):
                raise Conflict(cannot("delete", member), code="vm_busy")
            try:
                on.cloud.pools.remove_vm(on.ctx, on.pool_id, member.instance_id)
            except (NotFound, Conflict):
                raise refused(on, member, "delete", "vm_busy") from None
            return success(VmData(vm_id=member.instance_id, ip=member.ip, vm_status="deleted"))

    @router.get("/getVM/", response_model=Reply[VmData], operation_id="reservation_getVM")
    def getVM(unique_id: UniqueId = None, on: Target = on_pool) -> dict[str, Any]:
        """A VM's id, IP and status."""
        member = find(on, unique_id)
        if member is None:
            raise NotFound(NO_SUCH_ID, code="vm_not_found")
        return success(vm_data(member))

    @router.get("/getVMStatus/", response_model=Reply[StatusData], operation_id="reservation_getVMStatus")
    def getVMStatus(unique_id: UniqueId = None, on: Target = on_pool) -> dict[str, Any]:
        """A VM's status only, as the original answered it."""
        member = find(on, unique_id)
        if member is None:
            raise NotFound(NO_SUCH_ID, code="vm_not_found")
        return success(StatusData(vm_status=VM_STATUS[member.status]))

    return router


def find(on: Target, vm_id: str | None, ip: str | None = None, *, by_ip: bool = False) -> PoolMember | None:
    """The pool's VM ``vm_id`` (``by_ip``: with the address ``ip`` too), None when there is none or
    it is on its way out."""
    if not vm_id or len(vm_id) > ID_LENGTH or (by_ip and (not ip or len(ip) > ID_LENGTH)):
        return None
    query = select(PoolMember).where(PoolMember.pool_id == on.pool_id, PoolMember.instance_id == vm_id)
    if by_ip:
        query = query.where(PoolMember.ip == ip)
    with on.cloud.db.reads() as s:
        member = s.scalar(query)
    return member if member is not None and member.status in VM_STATUS else None


def vm_data(member: PoolMember) -> VmData:
    return VmData(vm_id=member.instance_id, ip=member.ip, vm_status=VM_STATUS[member.status])


def cannot(verb: str, member: PoolMember) -> str:
    """The original's refusal of an action on a VM in the wrong state, spaces and quotes included."""
    return f"You cannot {verb} a VM that is in ' {VM_STATUS[member.status]} ' State"


def refused(on: Target, member: PoolMember, verb: str, code: str) -> CloudletError:
    """The refusal for a VM that changed between the look and the action."""
    now = find(on, member.instance_id)
    if now is None:
        return NotFound(NO_SUCH_VM, code="vm_not_found")
    return Conflict(cannot(verb, now), code=code)


@contextmanager
def audited(on: Target, request: Request, action: str, vm: str | None = None) -> Iterator[None]:
    """Record the call in the audit log with the status it ends with (its envelope's meaning,
    which on the listener is not the HTTP status)."""
    status = 500
    try:
        yield
        status = 200
    except CloudletError as err:
        status = err.status
        raise
    finally:
        target = f"pool={on.pool_id}" + (f" vm={vm[:ID_LENGTH]}" if vm else "")
        on.cloud.audit.record(
            workspace_id=on.ctx.workspace_id or None,
            user_id=on.ctx.user_id,
            principal=on.ctx.principal,
            token_id=on.ctx.token_id,
            action=action,
            method="GET",
            path=request.url.path[:2000],
            target=target,
            source=request.client.host[:64] if request.client else None,
            status=status,
            result="ok" if status < 400 else ("refused" if status < 500 else "error"),
        )


# -- the listener ----------------------------------------------------------------------------------


def reservation_listen(settings: Settings) -> Listen:
    """Where the reservation system's API listens; refused (``UnsafeListener``) off loopback
    without a token, or without a pool to serve."""
    assert settings.reservation_listen is not None
    if not settings.reservation_pool:
        raise UnsafeListener("reservation_listen needs reservation_pool: the pool its VMs come from")
    listen = parse_listen(settings.reservation_listen, setting="reservation_listen")
    check_exposure(
        listen, settings.reservation_token, setting="reservation_listen", token_setting="reservation_token"
    )
    return listen


def _guard_refusal(status: int, _code: str, message: str) -> Response:
    return refusal(status, message)


def create_reservation_app(main_app: FastAPI, settings: Settings) -> FastAPI:
    """The listener's app: the six routes on ``reservation_pool`` of ``reservation_workspace``,
    acting as that workspace (the original had no users), behind the listener guard."""
    app = FastAPI(title="cloudlet reservation system API", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        ListenerGuard,
        listen=reservation_listen(settings),
        allowed_hosts=settings.reservation_allowed_hosts,
        token=settings.reservation_token,
        error=_guard_refusal,
    )
    pool_name, workspace = settings.reservation_pool, settings.reservation_workspace

    def target() -> Target:
        cloud: Cloud = main_app.state.cloud
        with cloud.db.reads() as s:
            row = s.execute(
                select(Pool.id, Pool.workspace_id)
                .join(Workspace, Workspace.id == Pool.workspace_id)
                .where(Workspace.name == workspace, Pool.name == pool_name)
            ).first()
        if row is None:
            raise NotFound(
                f"the reservation pool {pool_name!r} does not exist in workspace {workspace!r}",
                code="pool_not_found",
            )
        ctx = RequestContext(principal="reservation", workspace_id=row.workspace_id)
        return Target(cloud, ctx, row.id)

    app.include_router(reservation_router(target, real_status=False))

    @app.exception_handler(StarletteHTTPException)
    async def not_here(_request: Request, exc: StarletteHTTPException) -> Response:
        """Unknown routes and methods: the envelope, with their 404 or 405."""
        return refusal(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    return app
