"""The replaced "Virtual Machine Reservation System" API, served per pool when its ``legacy_api``
setting is on: the old JSON envelope ``{"status", "data", "message"}``, the old VM states
(available, checked-out, error) and the old messages, over the same pool service as /api/v1/pools.

Every answer of these routes, errors included (permissions, request validation, the services'
CloudletErrors), comes in the envelope with its real HTTP status; ``LegacyRoute`` does that in one
place instead of a try/except per route. The one exception is a 401: unauthenticated callers get
the problem+json every /api/v1 route answers them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cloudlet.api.deps import CloudDep, Ctx
from cloudlet.api.routers.pools import WaitSeconds
from cloudlet.db.models import Pool, PoolMember
from cloudlet.errors import CloudletError, DriverError, Invalid, NotFound, Unauthorized
from cloudlet.services.context import RequestContext

LegacyStatus = Literal["available", "checked-out", "error"]
# The old system knew three states; a VM on its way in or out is not available to anyone.
LEGACY_STATUS: dict[str, LegacyStatus] = {
    "available": "available",
    "checked-out": "checked-out",
    "error": "error",
    "provisioning": "checked-out",
    "resetting": "checked-out",
}
POLL_INTERVAL = 0.2  # seconds between looks at a new VM's state while a create waits

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """The old system's answer: every success and every error has this shape."""

    status: Literal["success", "error"]
    data: T
    message: str


class ErrorData(BaseModel, extra="allow"):
    code: str = Field(description="cloudlet's stable error code, e.g. pool_exhausted, vm_not_found.")


class LegacyVm(BaseModel):
    vm_id: str = Field(description="The VM's instance id.")
    name: str | None
    ip: str | None
    status: LegacyStatus = Field(description="available, checked-out or error (the old system's states).")
    state: str = Field(
        description="cloudlet's own status: provisioning, available, checked-out, resetting or error. "
        "provisioning and resetting VMs show as checked-out: nobody can have them."
    )
    holder: str | None
    lease_expires_at: datetime | None


class LegacyCheckout(LegacyVm):
    ssh_user: str


class VmList(BaseModel):
    vms: list[LegacyVm]


class VmStatus(BaseModel):
    vm_id: str
    status: LegacyStatus
    state: str


class VmIdentity(BaseModel):
    vm_id: str = Field(max_length=64, description="The VM's instance id.")
    ip: str = Field(max_length=64, description="Its IP address: both must name the same VM.")


class VmIdentityOptional(BaseModel):
    vm_id: str | None = Field(None, max_length=64)
    ip: str | None = Field(None, max_length=64)


class CreateOptions(BaseModel):
    wait: float = Field(0, ge=0, le=600, description="Seconds to wait for the new VM to be available.")


class CheckoutOptions(BaseModel):
    lease: int | None = Field(None, description="Seconds; default the pool's lease_default.")


def envelope_error(status: int, message: str, data: dict[str, Any], headers: dict[str, str]) -> JSONResponse:
    body = {"status": "error", "data": jsonable_encoder(data), "message": message}
    return JSONResponse(body, status_code=status, headers=headers or None)


def cloudlet_error(err: CloudletError) -> JSONResponse:
    headers: dict[str, str] = {}
    if "retry_after" in err.extra:  # an exhausted pool says when to try again, as the native API
        headers["Retry-After"] = str(err.extra["retry_after"])
    return envelope_error(err.status, err.detail, {**err.extra, "code": err.code}, headers)


def validation_error(err: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in err.errors()
    ]
    message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return envelope_error(422, message, {"code": "validation_error", "errors": errors}, {})


class LegacyRoute(APIRoute):
    """A route whose errors, from its dependencies (a cookie session's CSRF check), its request
    validation and its handler, are answered in the legacy envelope with their HTTP status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def enveloped(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthorized:
                # Refusing an unauthenticated caller is one contract for all of /api/v1
                # (problem+json with WWW-Authenticate, tests/unit/test_api_auth_errors.py).
                raise
            except CloudletError as err:
                return cloudlet_error(err)
            except RequestValidationError as err:
                return validation_error(err)

        return enveloped


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Envelope[ErrorData], "description": what}
    for status, what in {
        403: "Not allowed",
        404: "No such pool or VM, or the legacy API is off for this pool",
        409: "Conflict (no VM available, Maximum VM Count reached, VM busy)",
        422: "Invalid request",
    }.items()
}

router = APIRouter(
    prefix="/pools/{ref}/legacy", tags=["pools (legacy API)"], route_class=LegacyRoute, responses=ERRORS
)


def ok(data: T, message: str) -> Envelope[T]:
    return Envelope[T](status="success", data=data, message=message)


def legacy_vm(member: PoolMember) -> LegacyVm:
    return LegacyVm(
        vm_id=member.instance_id,
        name=member.name,
        ip=member.ip,
        status=LEGACY_STATUS.get(member.status, "checked-out"),
        state=member.status,
        holder=member.holder,
        lease_expires_at=member.lease_expires_at,
    )


def legacy_pool(cloud: CloudDep, ctx: RequestContext, ref: str) -> Pool:
    """The workspace's pool ``ref``; 404 when it does not serve the legacy API."""
    ctx.require("pool:view")
    with cloud.db.reads() as s:
        try:
            pool = cloud.pools.get(s, ctx, ref)
        except NotFound:
            # The message does not repeat the name: the envelope has no problem+json "detail"
            # field, where echoing the caller's own input is expected.
            raise NotFound("pool not found", code="pool_not_found") from None
    if not pool.legacy_api:
        raise NotFound("the legacy API is off for this pool", code="legacy_api_off")
    return pool


def pool_vms(cloud: CloudDep, pool: Pool) -> list[LegacyVm]:
    with cloud.db.reads() as s:
        return [legacy_vm(m) for m in cloud.pools.vms_of(s, [pool.id])[pool.id]]


def find_vm(cloud: CloudDep, pool: Pool, vm_id: str, ip: str | None = None) -> LegacyVm:
    """The pool's VM ``vm_id`` (and, when given, with address ``ip``: both name the same VM)."""
    with cloud.db.reads() as s:
        return legacy_vm(cloud.pools.member(s, pool.id, vm_id, ip))


def wait_available(cloud: CloudDep, pool: Pool, vm_id: str, seconds: float) -> LegacyVm:
    """Poll the new VM until it is available, it fails (an error), or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            vm: LegacyVm | None = find_vm(cloud, pool, vm_id)
        except NotFound:
            vm = None
        if vm is None or vm.state in ("error", "resetting"):  # failed: the controller replaces it
            raise DriverError("the new VM failed to start", code="vm_failed", vm_id=vm_id)
        if vm.state == "available" or time.monotonic() >= deadline:
            return vm
        time.sleep(POLL_INTERVAL)


@router.post("/vms", status_code=201)
def create_vm(
    ref: str,
    cloud: CloudDep,
    ctx: Ctx,
    body: CreateOptions | None = None,
    wait: float | None = Query(
        None, ge=0, le=600, description="Seconds to wait for the VM to be available (or in the body)."
    ),
) -> Envelope[LegacyVm]:
    """Add one VM to the pool; with `wait`, answer once it is available ("Maximum VM Count reached"
    past the pool's max_size)."""
    the_pool = legacy_pool(cloud, ctx, ref)
    seconds = wait if wait is not None else body.wait if body else 0
    (vm_id,) = cloud.pools.add_vms(ctx, the_pool.id, 1)
    vm = wait_available(cloud, the_pool, vm_id, seconds) if seconds > 0 else find_vm(cloud, the_pool, vm_id)
    return ok(vm, "VM created" if vm.state == "available" else "VM created, not available yet")


@router.delete("/vms")
def delete_vm(
    ref: str,
    cloud: CloudDep,
    ctx: Ctx,
    body: VmIdentityOptional | None = None,
    vm_id: str | None = Query(None, max_length=64, description="Or in the JSON body."),
    ip: str | None = Query(None, max_length=64, description="Or in the JSON body."),
) -> Envelope[VmIdentity]:
    """Delete a VM named by its vm_id and ip (only an available VM or one in error)."""
    the_pool = legacy_pool(cloud, ctx, ref)
    vm_id = vm_id or (body.vm_id if body else None)
    ip = ip or (body.ip if body else None)
    if not vm_id or not ip:
        raise Invalid("vm_id and ip are both required", code="validation_error")
    vm = find_vm(cloud, the_pool, vm_id, ip)
    cloud.pools.remove_vm(ctx, the_pool.id, vm.vm_id)
    return ok(VmIdentity(vm_id=vm_id, ip=ip), "VM deleted")


@router.get("/vms")
def list_vms(ref: str, cloud: CloudDep, ctx: Ctx) -> Envelope[VmList]:
    """Every VM of the pool."""
    the_pool = legacy_pool(cloud, ctx, ref)
    return ok(VmList(vms=pool_vms(cloud, the_pool)), "VMs listed")


@router.get("/vms/{vm}")
def get_vm(ref: str, vm: str, cloud: CloudDep, ctx: Ctx) -> Envelope[LegacyVm]:
    """One VM of the pool."""
    return ok(find_vm(cloud, legacy_pool(cloud, ctx, ref), vm), "VM found")


@router.get("/vms/{vm}/status")
def vm_status(ref: str, vm: str, cloud: CloudDep, ctx: Ctx) -> Envelope[VmStatus]:
    """A VM's status only (available, checked-out or error)."""
    found = find_vm(cloud, legacy_pool(cloud, ctx, ref), vm)
    return ok(VmStatus(vm_id=found.vm_id, status=found.status, state=found.state), f"VM is {found.status}")


@router.post("/checkout")
async def checkout(
    ref: str,
    cloud: CloudDep,
    ctx: Ctx,
    body: CheckoutOptions | None = None,
    wait: WaitSeconds = 0,
) -> Envelope[LegacyCheckout]:
    """Check out an available VM: its id, IP, SSH user and lease end (409 "No VMs currently
    available, please try after some time" with a Retry-After estimate when none is)."""
    the_pool = await run_in_threadpool(legacy_pool, cloud, ctx, ref)
    # the waiting line lives on the event loop; the service runs its database work in threads
    got = await cloud.pools.checkout_waiting(ctx, the_pool.id, body.lease if body else None, wait)
    vm = LegacyCheckout(
        vm_id=got.instance_id,
        name=got.name,
        ip=got.ip,
        status="checked-out",
        state="checked-out",
        holder=ctx.principal,
        lease_expires_at=got.lease_expires_at,
        ssh_user=got.ssh_user,
    )
    return ok(vm, "VM checked out")


@router.post("/checkin")
def checkin(ref: str, body: VmIdentity, cloud: CloudDep, ctx: Ctx) -> Envelope[LegacyVm]:
    """Give a VM back, named by its vm_id and ip (its holder, or a workspace admin)."""
    the_pool = legacy_pool(cloud, ctx, ref)
    vm = find_vm(cloud, the_pool, body.vm_id, body.ip)
    cloud.pools.checkin(ctx, the_pool.id, vm.vm_id)
    try:
        after = find_vm(cloud, the_pool, vm.vm_id)
    except NotFound:  # reset or destroy took it away already
        after = vm.model_copy(
            update={"status": "checked-out", "state": "resetting", "holder": None, "lease_expires_at": None}
        )
    return ok(after, "VM checked in")
