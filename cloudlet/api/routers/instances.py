"""Instances (VMs) and their actions."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudlet.api.deps import CloudDep, Ctx, ReadSession
from cloudlet.api.routers.operations import WaitParam, accepted
from cloudlet.api.schemas import InstanceCreate, InstancePublic, OperationPublic, Page
from cloudlet.db.models import Image, Instance, IPAllocation, Network
from cloudlet.services.instances import CreateRequest

router = APIRouter(prefix="/instances", tags=["instances"])

Action = Literal["start", "stop", "force-stop", "reboot"]


def instances_public(session: Session, rows: list[Instance]) -> list[InstancePublic]:
    """Public views of instances, with image/network names and addresses in three queries."""
    ids = [r.id for r in rows]
    allocs = {
        a.instance_id: a
        for a in session.scalars(select(IPAllocation).where(IPAllocation.instance_id.in_(ids)))
    }
    image_ids = {r.image_id for r in rows}
    network_ids = {r.network_id for r in rows}
    images = {i: n for i, n in session.execute(select(Image.id, Image.name).where(Image.id.in_(image_ids)))}
    nets = {
        i: n for i, n in session.execute(select(Network.id, Network.name).where(Network.id.in_(network_ids)))
    }
    out = []
    for r in rows:
        alloc = allocs.get(r.id)
        out.append(
            InstancePublic(
                id=r.id,
                name=r.name,
                kind=r.kind,
                state=r.state,
                cpus=r.cpus,
                memory=r.memory_mb,
                disk=r.disk_gb,
                hostname=r.hostname,
                image=images.get(r.image_id or ""),
                image_id=r.image_id,
                network=nets.get(r.network_id or ""),
                network_id=r.network_id,
                ip=alloc.address if alloc else None,
                mac=alloc.mac if alloc else None,
                host=r.host,
                error=r.error,
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
        )
    return out


@router.get("", response_model=Page[InstancePublic])
def list_instances(
    cloud: CloudDep,
    session: ReadSession,
    ctx: Ctx,
    state: str | None = Query(None, description="Only instances in this state."),
    name: str | None = Query(None, description="Only instances whose name contains this."),
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> Page[InstancePublic]:
    """List instances, oldest first."""
    rows, total = cloud.instances.search(session, ctx, state=state, name=name, limit=limit, offset=offset)
    return Page(items=instances_public(session, rows), total=total, limit=limit, offset=offset)


@router.post("", status_code=202, response_model=OperationPublic)
def create_instance(
    body: InstanceCreate, cloud: CloudDep, ctx: Ctx, response: Response, wait: float | None = WaitParam
) -> OperationPublic:
    """Create and start a VM from an image; its IP is allocated before it boots."""
    req = CreateRequest(
        name=body.name,
        image=body.image,
        cpus=body.cpus,
        memory=body.memory,
        disk=body.disk,
        network=body.network,
        hostname=body.hostname,
        ssh_keys=tuple(body.ssh_keys),
    )
    _, op_id = cloud.instances.create(ctx, req)
    return accepted(cloud, ctx, op_id, wait, response)


@router.get("/{ref}", response_model=InstancePublic)
def get_instance(cloud: CloudDep, session: ReadSession, ctx: Ctx, ref: str) -> InstancePublic:
    """Show an instance by name or id."""
    return instances_public(session, [cloud.instances.get(session, ctx, ref)])[0]


@router.post("/{ref}/actions/{action}", status_code=202, response_model=OperationPublic)
def instance_action(
    cloud: CloudDep, ctx: Ctx, ref: str, action: Action, response: Response, wait: float | None = WaitParam
) -> OperationPublic:
    """Start, stop (graceful, then forced after the timeout), force-stop or reboot."""
    return accepted(cloud, ctx, cloud.instances.action(ctx, ref, action), wait, response)


@router.delete("/{ref}", status_code=202, response_model=OperationPublic)
def delete_instance(
    cloud: CloudDep,
    ctx: Ctx,
    ref: str,
    response: Response,
    force: bool = Query(False, description="Delete even when running."),
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Delete an instance with its disks, seed and address."""
    return accepted(cloud, ctx, cloud.instances.action(ctx, ref, "delete", force=force), wait, response)
