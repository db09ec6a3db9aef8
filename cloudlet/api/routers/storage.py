"""Storage pools (host-wide, managed by system admins) and volumes (per workspace), and the volumes
attached to a VM: /storage-pools, /volumes, /instances/{ref}/volumes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudlet.api.deps import (
    CanCreateInstances,
    CanDeleteInstances,
    CanEditInstances,
    CanViewInstances,
    CloudDep,
    Ctx,
    ReadSession,
)
from cloudlet.api.routers.operations import WaitParam, accepted
from cloudlet.api.schemas import OperationPublic
from cloudlet.db.models import Instance, StoragePool, Volume
from cloudlet.drivers.libvirt.storage_xml import serial_of
from cloudlet.services.cloud import Cloud
from cloudlet.services.context import RequestContext
from cloudlet.services.storage_pools import PoolRequest

pools_router = APIRouter(prefix="/storage-pools", tags=["storage"])
router = APIRouter(prefix="/volumes", tags=["storage"])
instance_router = APIRouter(prefix="/instances/{ref}/volumes", tags=["storage"])


class StoragePoolCreate(BaseModel):
    name: str = Field(
        max_length=63, description="Unique on the server; lowercase DNS label.", examples=["nfs1"]
    )
    kind: Literal["dir", "netfs"] = Field("dir", description="`dir`: a host folder; `netfs`: an NFS export.")
    path: str = Field(
        max_length=1024,
        description="Absolute host folder of a dir pool, or where a netfs pool is mounted.",
        examples=["/srv/cloudlet/nfs1"],
    )
    source_host: str | None = Field(None, max_length=253, description="netfs: the NFS server.")
    source_path: str | None = Field(None, max_length=1024, description="netfs: the exported folder.")


class StoragePoolPublic(BaseModel):
    id: str
    name: str
    kind: str
    status: str = Field(description="creating, active or deleting")
    default: bool = Field(description="Volumes are made here when no pool is named.")
    path: str | None = Field(None, description="Host folder or mount point (shown to system admins).")
    source_host: str | None = None
    source_path: str | None = None
    capacity: int | None = Field(None, description="Bytes in all, read live from the backend.")
    allocation: int | None = Field(None, description="Bytes in use.")
    available: int | None = Field(None, description="Bytes free for volumes.")
    volumes: int = Field(0, description="Volumes in this pool, of every workspace.")
    created_at: datetime


def pool_public(cloud: Cloud, session: Session, ctx: RequestContext, row: StoragePool) -> StoragePoolPublic:
    usage = cloud.storage_pools.usage(row)
    admin = ctx.is_admin
    return StoragePoolPublic(
        id=row.id,
        name=row.name,
        kind=row.kind,
        status=row.status,
        default=row.is_default,
        path=row.path if admin else None,
        source_host=row.source_host if admin else None,
        source_path=row.source_path if admin else None,
        capacity=usage.capacity if usage else None,
        allocation=usage.allocation if usage else None,
        available=usage.available if usage else None,
        volumes=cloud.storage_pools.volume_count(session, row.id),
        created_at=row.created_at,
    )


@pools_router.get("", response_model=list[StoragePoolPublic])
def list_storage_pools(cloud: CloudDep, session: ReadSession, ctx: Ctx) -> list[StoragePoolPublic]:
    """List the server's storage pools with live capacity, allocation and free space."""
    return [pool_public(cloud, session, ctx, p) for p in cloud.storage_pools.all(session)]


@pools_router.get("/{pool}", response_model=StoragePoolPublic)
def get_storage_pool(cloud: CloudDep, session: ReadSession, ctx: Ctx, pool: str) -> StoragePoolPublic:
    """Show a storage pool by name or id."""
    return pool_public(cloud, session, ctx, cloud.storage_pools.get(session, pool))


@pools_router.post("", status_code=202, response_model=OperationPublic)
def create_storage_pool(
    body: StoragePoolCreate, cloud: CloudDep, ctx: Ctx, response: Response, wait: float | None = WaitParam
) -> OperationPublic:
    """Add a dir or netfs storage pool (system admins); it is built, started and autostarted."""
    req = PoolRequest(body.name, body.kind, body.path, body.source_host, body.source_path)
    _, op_id = cloud.storage_pools.create(ctx, req)
    return accepted(cloud, ctx, op_id, wait, response)


@pools_router.delete("/{pool}", status_code=202, response_model=OperationPublic)
def delete_storage_pool(
    cloud: CloudDep, ctx: Ctx, pool: str, response: Response, wait: float | None = WaitParam
) -> OperationPublic:
    """Remove a storage pool (system admins; 409 while it holds volumes). Its files stay on disk."""
    return accepted(cloud, ctx, cloud.storage_pools.delete(ctx, pool), wait, response)


class VolumeCreate(BaseModel):
    name: str = Field(
        max_length=63, description="Unique in the workspace; lowercase DNS label.", examples=["data"]
    )
    size: int = Field(ge=1, description="GiB; counts against the workspace's disk_gb quota.", examples=[10])
    pool: str | None = Field(None, description="Storage pool name or id; the default pool if left out.")


class VolumeResize(BaseModel):
    size: int = Field(ge=1, description="New size in GiB; volumes only grow.")


class VolumeAttach(BaseModel):
    volume: str = Field(description="Volume name or id.", examples=["data"])


class VolumePublic(BaseModel):
    id: str
    name: str
    size: int = Field(description="GiB the guest sees.")
    allocation: int | None = Field(None, description="Bytes it takes in its pool now (qcow2 grows on write).")
    pool: str
    pool_id: str
    status: str = Field(description="creating, ready, resizing, attaching, detaching or deleting")
    attached_to: str | None = Field(None, description="Name of the VM it is attached to.")
    attached_to_id: str | None = None
    target: str | None = Field(None, description="Its disk in that VM (vdc, vdd...).")
    serial: str = Field(description="The disk serial the guest sees (/dev/disk/by-id/virtio-<serial>).")
    created_at: datetime


def volumes_public(
    cloud: Cloud, session: Session, rows: list[Volume], *, live: bool = True
) -> list[VolumePublic]:
    pools = {
        p.id: p
        for p in session.scalars(select(StoragePool).where(StoragePool.id.in_({r.pool_id for r in rows})))
    }
    vm_ids = {r.instance_id for r in rows if r.instance_id}
    vms = {
        i: n for i, n in session.execute(select(Instance.id, Instance.name).where(Instance.id.in_(vm_ids)))
    }
    out = []
    for r in rows:
        pool = pools[r.pool_id]
        out.append(
            VolumePublic(
                id=r.id,
                name=r.name,
                size=r.size_gb,
                allocation=cloud.volumes.allocation(pool, r) if live else None,
                pool=pool.name,
                pool_id=pool.id,
                status=r.status,
                attached_to=vms.get(r.instance_id or ""),
                attached_to_id=r.instance_id,
                target=r.target,
                serial=serial_of(r.id),
                created_at=r.created_at,
            )
        )
    return out


@router.get("", response_model=list[VolumePublic])
def list_volumes(cloud: CloudDep, session: ReadSession, ctx: CanViewInstances) -> list[VolumePublic]:
    """List the workspace's volumes, oldest first."""
    return volumes_public(cloud, session, cloud.volumes.all(session, ctx))


@router.post("", status_code=202, response_model=OperationPublic)
def create_volume(
    body: VolumeCreate,
    cloud: CloudDep,
    ctx: CanCreateInstances,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Create an empty qcow2 volume in a storage pool."""
    _, op_id = cloud.volumes.create(ctx, body.name, body.size, body.pool)
    return accepted(cloud, ctx, op_id, wait, response)


@router.get("/{volume}", response_model=VolumePublic)
def get_volume(cloud: CloudDep, session: ReadSession, ctx: CanViewInstances, volume: str) -> VolumePublic:
    """Show a volume by name or id."""
    return volumes_public(cloud, session, [cloud.volumes.get(session, ctx, volume)])[0]


@router.post("/{volume}/resize", status_code=202, response_model=OperationPublic)
def resize_volume(
    body: VolumeResize,
    cloud: CloudDep,
    ctx: CanEditInstances,
    volume: str,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Grow a volume, also while a running VM uses it (the guest sees the new size at once)."""
    return accepted(cloud, ctx, cloud.volumes.resize(ctx, volume, body.size), wait, response)


@router.delete("/{volume}", status_code=202, response_model=OperationPublic)
def delete_volume(
    cloud: CloudDep, ctx: CanDeleteInstances, volume: str, response: Response, wait: float | None = WaitParam
) -> OperationPublic:
    """Delete a volume and its data (409 volume_in_use while it is attached)."""
    return accepted(cloud, ctx, cloud.volumes.delete(ctx, volume), wait, response)


@instance_router.get("", response_model=list[VolumePublic])
def list_instance_volumes(
    cloud: CloudDep, session: ReadSession, ctx: CanViewInstances, ref: str
) -> list[VolumePublic]:
    """The volumes attached to a VM, by disk."""
    vm = cloud.instances.get(session, ctx, ref)
    rows = session.scalars(select(Volume).where(Volume.instance_id == vm.id).order_by(Volume.target))
    return volumes_public(cloud, session, list(rows))


@instance_router.post("", status_code=202, response_model=OperationPublic)
def attach_volume(
    body: VolumeAttach,
    cloud: CloudDep,
    ctx: CanEditInstances,
    ref: str,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Attach a volume to a VM as its next free disk: hot-plugged while it runs."""
    return accepted(cloud, ctx, cloud.volumes.attach(ctx, ref, body.volume), wait, response)


@instance_router.delete("/{volume}", status_code=202, response_model=OperationPublic)
def detach_volume(
    cloud: CloudDep,
    ctx: CanEditInstances,
    ref: str,
    volume: str,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Detach a volume from a VM; a running guest must let go of it. The volume keeps its data."""
    return accepted(cloud, ctx, cloud.volumes.detach(ctx, ref, volume), wait, response)
