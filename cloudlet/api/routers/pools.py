"""Reservation pools: check out a ready VM, get its IP, check it back in."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from cloudlet.api.deps import CloudDep, Ctx
from cloudlet.db.models import Pool, PoolLease, PoolMember
from cloudlet.services.pools import PoolSpec

router = APIRouter(prefix="/pools", tags=["pools"])
WaitSeconds = Annotated[
    float, Query(ge=0, le=600, description="Queue up to this many seconds, first come first served.")
]


class PoolTemplate(BaseModel):
    image: str
    cpus: int = Field(1, ge=1, le=64)
    memory: int = Field(512, ge=64, description="MiB")
    disk: int = Field(1, ge=1, description="GiB")
    network: str = "default"
    ssh_keys: list[str] = Field(default_factory=list)
    user_data: str | None = Field(
        None, max_length=65536, description="cloud-init user-data (#cloud-config or a #! script)."
    )
    ssh_user: str = Field("root", pattern=r"^[a-z_][a-z0-9_-]{0,31}$", description="Told to holders.")
    probe_port: int | None = Field(
        22, ge=1, le=65535, description="A VM is available once this TCP port answers; null: once it runs."
    )


class PoolCreate(BaseModel):
    name: str = Field(max_length=63)
    template: PoolTemplate
    min_ready: int = Field(1, ge=0, description="Booted VMs kept waiting.")
    max_size: int = Field(5, ge=1, description="Hard limit on the pool's VMs.")
    lease_default: int = Field(3600, description="Seconds.")
    lease_max: int = Field(86400, description="Seconds, counted from the checkout.")
    on_checkin: str = Field("reset", description="reset (a fresh VM replaces it) | reuse | destroy")
    idle_timeout: int | None = Field(None, description="Seconds an extra VM may wait unused.")
    legacy_api: bool = Field(
        False,
        description="Also answer the replaced reservation system's API to token holders, under "
        "/api/v1/pools/{pool}/legacy/ (createVM/, checkoutVM/...).",
    )


class PoolVm(BaseModel):
    instance_id: str
    name: str | None
    ip: str | None
    status: str = Field(description="provisioning, available, checked-out, resetting or error")
    holder: str | None
    lease_expires_at: datetime | None


class PoolPublic(BaseModel):
    id: str
    name: str
    template: dict[str, object]
    min_ready: int
    max_size: int
    lease_default: int
    lease_max: int
    on_checkin: str
    idle_timeout: int | None
    legacy_api: bool
    counts: dict[str, int]
    vms: list[PoolVm]
    created_at: datetime


class CheckoutRequest(BaseModel):
    lease: int | None = Field(None, description="Seconds; default the pool's lease_default.")


class CheckoutPublic(BaseModel):
    id: str
    name: str
    ip: str | None
    ssh_user: str
    lease_expires_at: datetime


class VmRef(BaseModel):
    id: str | None = Field(None, description="Instance id or name.")
    ip: str | None = None

    def ref(self) -> str:
        return self.id or self.ip or ""


class ExtendRequest(VmRef):
    seconds: int = Field(description="The new lease runs this long from now (up to lease_max).")


class AddVms(BaseModel):
    count: int = Field(1, ge=1, le=100)


class LeasePublic(BaseModel):
    pool_id: str
    instance_id: str
    instance_name: str
    ip: str | None
    holder: str
    started_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None


def pools_public(cloud: CloudDep, pools: list[Pool]) -> list[PoolPublic]:
    with cloud.db.reads() as s:
        vms = cloud.pools.vms_of(s, [p.id for p in pools])
    return [pool_public(p, vms[p.id]) for p in pools]


def pool_public(pool: Pool, members: list[PoolMember]) -> PoolPublic:
    vms = [
        PoolVm(
            instance_id=m.instance_id,
            name=m.name,
            ip=m.ip,
            status=m.status,
            holder=m.holder,
            lease_expires_at=m.lease_expires_at,
        )
        for m in members
    ]
    counts: dict[str, int] = {}
    for vm in vms:
        counts[vm.status] = counts.get(vm.status, 0) + 1
    return PoolPublic(
        id=pool.id,
        name=pool.name,
        template=pool.template,
        min_ready=pool.min_ready,
        max_size=pool.max_size,
        lease_default=pool.lease_default,
        lease_max=pool.lease_max,
        on_checkin=pool.on_checkin,
        idle_timeout=pool.idle_timeout,
        legacy_api=pool.legacy_api,
        counts=counts,
        vms=vms,
        created_at=pool.created_at,
    )


def lease_public(lease: PoolLease) -> LeasePublic:
    return LeasePublic.model_validate(lease, from_attributes=True)


@router.get("", response_model=list[PoolPublic])
def list_pools(cloud: CloudDep, ctx: Ctx) -> list[PoolPublic]:
    ctx.require("pool:view")
    with cloud.db.reads() as s:
        pools = cloud.pools.all(s, ctx)
    return pools_public(cloud, pools)


def pool_spec(body: PoolCreate) -> PoolSpec:
    t = body.template
    return PoolSpec(
        name=body.name,
        image=t.image,
        cpus=t.cpus,
        memory=t.memory,
        disk=t.disk,
        network=t.network,
        ssh_keys=tuple(t.ssh_keys),
        user_data=t.user_data,
        ssh_user=t.ssh_user,
        probe_port=t.probe_port,
        legacy_api=body.legacy_api,
        min_ready=body.min_ready,
        max_size=body.max_size,
        lease_default=body.lease_default,
        lease_max=body.lease_max,
        on_checkin=body.on_checkin,
        idle_timeout=body.idle_timeout,
    )


@router.post("", response_model=PoolPublic, status_code=201)
def create_pool(body: PoolCreate, cloud: CloudDep, ctx: Ctx) -> PoolPublic:
    """Make a pool; its controller then keeps `min_ready` VMs booted, never above `max_size`."""
    spec = pool_spec(body)
    return pools_public(cloud, [cloud.pools.create(ctx, spec)])[0]


@router.get("/{ref}", response_model=PoolPublic)
def get_pool(ref: str, cloud: CloudDep, ctx: Ctx) -> PoolPublic:
    """A pool with the status of every VM (provisioning, available, checked-out, resetting, error)."""
    ctx.require("pool:view")
    with cloud.db.reads() as s:
        pool = cloud.pools.get(s, ctx, ref)
    return pools_public(cloud, [pool])[0]


@router.put("/{ref}", response_model=PoolPublic)
def update_pool(ref: str, body: PoolCreate, cloud: CloudDep, ctx: Ctx) -> PoolPublic:
    """Replace a pool's template and settings (and name). VMs made from now on follow the new
    template; VMs it holds keep theirs until they are checked in and reset. A smaller `max_size`
    retires ready VMs above it; checked-out VMs are never taken away."""
    return pools_public(cloud, [cloud.pools.update(ctx, ref, pool_spec(body))])[0]


@router.delete("/{ref}", status_code=204)
def delete_pool(ref: str, cloud: CloudDep, ctx: Ctx) -> Response:
    """Delete a pool and its VMs (refused while a VM is checked out)."""
    cloud.pools.delete(ctx, ref)
    return Response(status_code=204)


@router.post("/{ref}/checkout", response_model=CheckoutPublic)
async def checkout(
    ref: str,
    cloud: CloudDep,
    ctx: Ctx,
    body: CheckoutRequest | None = None,
    wait: WaitSeconds = 0,
) -> CheckoutPublic:
    """Check out a ready VM: its id, IP, SSH user and lease end. With none ready: 409
    `pool_exhausted` with a Retry-After estimate."""
    lease = body.lease if body else None
    got = await cloud.pools.checkout_waiting(ctx, ref, lease, wait)
    return CheckoutPublic(
        id=got.instance_id,
        name=got.name,
        ip=got.ip,
        ssh_user=got.ssh_user,
        lease_expires_at=got.lease_expires_at,
    )


@router.post("/{ref}/checkin", status_code=204)
def checkin(ref: str, body: VmRef, cloud: CloudDep, ctx: Ctx) -> Response:
    """Give a VM back, by id, name or IP (its holder, or a workspace admin)."""
    cloud.pools.checkin(ctx, ref, body.ref())
    return Response(status_code=204)


@router.post("/{ref}/extend", response_model=dict[str, datetime])
def extend(ref: str, body: ExtendRequest, cloud: CloudDep, ctx: Ctx) -> dict[str, datetime]:
    """Extend a lease (up to the pool's lease_max after the checkout)."""
    return {"lease_expires_at": cloud.pools.extend(ctx, ref, body.ref(), body.seconds)}


@router.post("/{ref}/vms", response_model=dict[str, list[str]], status_code=201)
def add_vms(ref: str, body: AddVms, cloud: CloudDep, ctx: Ctx) -> dict[str, list[str]]:
    """Add VMs now (409 "Maximum VM Count reached" past max_size)."""
    return {"instance_ids": cloud.pools.add_vms(ctx, ref, body.count)}


@router.delete("/{ref}/vms/{vm}", status_code=204)
def remove_vm(ref: str, vm: str, cloud: CloudDep, ctx: Ctx) -> Response:
    """Delete a VM of the pool: only an available one or one in error."""
    cloud.pools.remove_vm(ctx, ref, vm)
    return Response(status_code=204)


@router.get("/{ref}/history", response_model=list[LeasePublic])
def history(ref: str, cloud: CloudDep, ctx: Ctx, limit: int = Query(100, ge=1, le=1000)) -> list[LeasePublic]:
    """Who had which VM of the pool, when, and how the lease ended, newest first."""
    ctx.require("pool:view")
    with cloud.db.reads() as s:
        pool = cloud.pools.get(s, ctx, ref)
        return [lease_public(x) for x in cloud.pools.leases(s, ctx, pool_id=pool.id, limit=limit)]


leases_router = APIRouter(tags=["pools"])


@leases_router.get("/leases", response_model=list[LeasePublic])
def my_leases(cloud: CloudDep, ctx: Ctx) -> list[LeasePublic]:
    """Your current leases, in every pool of the workspace."""
    with cloud.db.reads() as s:
        return [lease_public(x) for x in cloud.pools.leases(s, ctx, mine=True, current=True)]
