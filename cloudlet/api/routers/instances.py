"""Instances (VMs and containers) and their actions."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudlet.api.deps import (
    CanCreateInstances,
    CanDeleteInstances,
    CanEditInstances,
    CanViewInstances,
    CloudDep,
    ReadSession,
)
from cloudlet.api.routers.operations import WaitParam, accepted
from cloudlet.api.schemas import (
    AnyInstanceCreate,
    ContainerCreate,
    ContainerPublic,
    InstanceCreate,
    InstancePublic,
    NicPublic,
    OperationPublic,
    Page,
)
from cloudlet.db.models import Image, Instance, Network
from cloudlet.drivers.containers import ContainerDetails
from cloudlet.errors import CloudletError
from cloudlet.services.clones import CloneRequest
from cloudlet.services.cloud import Cloud
from cloudlet.services.cloudinit import GuestUser
from cloudlet.services.containers import ContainerRequest, PortRequest, VolumeRequest
from cloudlet.services.context import RequestContext
from cloudlet.services.instances import CreateRequest, NicRequest
from cloudlet.services.networks import instance_nics

router = APIRouter(prefix="/instances", tags=["instances"])

Action = Literal["start", "stop", "force-stop", "reboot", "restart", "kill", "pause", "resume"]
SIGNAL = r"^(SIG)?[A-Z0-9]{2,8}$|^[0-9]{1,2}$"


def container_public(
    config: dict[str, Any], details: ContainerDetails | None = None, *, reveal_env: bool = False
) -> ContainerPublic:
    """A container's settings; environment values only for who may edit it (``reveal_env``)."""
    view = ContainerPublic.model_validate(config)
    if not reveal_env:
        view.env = dict.fromkeys(view.env)
    if details is not None:
        view.short_id = details.short_id
        view.status = details.status
        view.exit_code = details.exit_code
        view.started_at = details.started_at
        view.finished_at = details.finished_at
        view.size_rw = details.size_rw
        view.size_root_fs = details.size_root_fs
    return view


def live_details(cloud: Cloud, row: Instance, *, size: bool) -> ContainerDetails | None:
    """The engine's view of a container; None when it cannot be asked now (the row still shows)."""
    if row.kind != "container" or row.state in ("pending", "provisioning", "deleting"):
        return None
    try:
        return cloud.instances.container_engine().details(row.id, size=size)
    except CloudletError:
        return None


def instances_public(
    session: Session,
    ctx: RequestContext,
    rows: list[Instance],
    details: dict[str, ContainerDetails] | None = None,
) -> list[InstancePublic]:
    """Public views of instances, with image/network names and addresses in three queries.
    Container environment values are shown only to callers who may edit the instance."""
    reveal_env = ctx.can("instance:edit")
    ids = [r.id for r in rows]
    nics = instance_nics(session, ids)
    image_ids = {r.image_id for r in rows}
    network_ids = {r.network_id for r in rows}
    images = {i: n for i, n in session.execute(select(Image.id, Image.name).where(Image.id.in_(image_ids)))}
    nets = {
        i: n for i, n in session.execute(select(Network.id, Network.name).where(Network.id.in_(network_ids)))
    }
    out = []
    for r in rows:
        own = nics.get(r.id, [])
        alloc = own[0][0] if own else None
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
                image=images.get(r.image_id or "") or (r.config or {}).get("image"),
                image_id=r.image_id,
                network=nets.get(r.network_id or ""),
                network_id=r.network_id,
                ip=alloc.address if alloc else None,
                mac=alloc.mac if alloc else None,
                nics=[NicPublic(network=n.name, network_id=n.id, ip=a.address, mac=a.mac) for a, n in own],
                host=r.host,
                error=r.error,
                container=(
                    container_public(r.config or {}, (details or {}).get(r.id), reveal_env=reveal_env)
                    if r.kind == "container"
                    else None
                ),
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
        )
    return out


@router.get("", response_model=Page[InstancePublic])
def list_instances(
    cloud: CloudDep,
    session: ReadSession,
    ctx: CanViewInstances,
    state: str | None = Query(None, description="Only instances in this state."),
    name: str | None = Query(None, description="Only instances whose name contains this."),
    kind: Literal["vm", "container"] | None = Query(None, description="Only VMs or only containers."),
    size: bool = Query(False, description="Containers: measure disk use (slower)."),
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> Page[InstancePublic]:
    """List instances, oldest first."""
    rows, total = cloud.instances.search(
        session, ctx, state=state, name=name, kind=kind, limit=limit, offset=offset
    )
    items = instances_public(session, ctx, rows)
    if size and any(r.kind == "container" for r in rows):
        try:  # one engine call for every container's disk use, not one per row
            sizes = cloud.instances.container_engine().sizes()
        except CloudletError:
            sizes = {}
        for item in items:
            if item.container is not None and item.id in sizes:
                item.container.size_rw, item.container.size_root_fs = sizes[item.id]
    return Page(items=items, total=total, limit=limit, offset=offset)


def container_request(body: ContainerCreate) -> ContainerRequest:
    return ContainerRequest(
        name=body.name,
        image=body.image,
        command=tuple(body.command) if body.command is not None else None,
        entrypoint=tuple(body.entrypoint) if body.entrypoint is not None else None,
        env=dict(body.env),
        ports=tuple(PortRequest(p.host, p.container, p.protocol, p.host_ip) for p in body.ports),
        volumes=tuple(VolumeRequest(v.path, v.name, v.host_path, v.read_only) for v in body.volumes),
        cpus=body.cpus,
        memory=body.memory,
        restart=body.restart,
        network=body.network,
        hostname=body.hostname,
        privileged=body.privileged,
        workdir=body.workdir,
        user=body.user,
    )


def vm_request(body: InstanceCreate) -> CreateRequest:
    return CreateRequest(
        name=body.name,
        image=body.image,
        cpus=body.cpus,
        memory=body.memory,
        disk=body.disk,
        network=body.network,
        hostname=body.hostname,
        ssh_keys=tuple(body.ssh_keys),
        user_data=body.user_data,
        users=tuple(
            GuestUser(
                name=u.name,
                password=u.password,
                password_hash=u.password_hash,
                ssh_keys=tuple(u.ssh_keys),
                sudo=u.sudo,
                shell=u.shell,
                groups=tuple(u.groups),
            )
            for u in body.users
        ),
        ssh_password_auth=body.ssh_password_auth,
        ip=body.ip,
        static_ip=body.static_ip,
        dns=tuple(body.dns),
        network_config=body.network_config,
        nics=tuple(NicRequest(n.network, n.ip) for n in body.nics),
    )


@router.post("", status_code=202, response_model=OperationPublic)
def create_instance(
    body: AnyInstanceCreate,
    cloud: CloudDep,
    ctx: CanCreateInstances,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Create and start a VM from an image (its IP is allocated before it boots), or run a
    container (`kind: container`) from a local image on a cloudlet network."""
    if isinstance(body, ContainerCreate):
        _, op_id = cloud.instances.create_container(ctx, container_request(body))
        return accepted(cloud, ctx, op_id, wait, response)
    req = vm_request(body)
    _, op_id = cloud.instances.create(ctx, req)
    return accepted(cloud, ctx, op_id, wait, response)


@router.get("/{ref}", response_model=InstancePublic)
def get_instance(
    cloud: CloudDep,
    session: ReadSession,
    ctx: CanViewInstances,
    ref: str,
    size: bool = Query(False, description="Containers: measure disk use (slower)."),
) -> InstancePublic:
    """Show an instance by name or id; a container's view includes the engine's live status."""
    row = cloud.instances.get(session, ctx, ref)
    found = live_details(cloud, row, size=size)
    return instances_public(session, ctx, [row], {row.id: found} if found else None)[0]


@router.post("/{ref}/actions/{action}", status_code=202, response_model=OperationPublic)
def instance_action(
    cloud: CloudDep,
    ctx: CanEditInstances,
    ref: str,
    action: Action,
    response: Response,
    wait: float | None = WaitParam,
    signal: str = Query("SIGKILL", pattern=SIGNAL, description="kill: the signal to send."),
) -> OperationPublic:
    """Start; stop (graceful, then forced after the timeout); force-stop; reboot or restart;
    kill (a container's process gets `signal`; a VM is powered off); pause; resume."""
    return accepted(cloud, ctx, cloud.instances.action(ctx, ref, action, signal=signal), wait, response)


class Resize(BaseModel):
    cpus: int | None = Field(
        None, ge=1, le=64, description="vCPUs: more also while it runs, fewer when stopped."
    )
    memory: int | None = Field(
        None, ge=64, description="MiB: more also while it runs (in 128 MiB steps), less when stopped."
    )
    disk: int | None = Field(None, ge=1, description="GiB; disks only grow, also while the VM runs.")


@router.post("/{ref}/resize", status_code=202, response_model=OperationPublic)
def resize_instance(
    body: Resize,
    cloud: CloudDep,
    ctx: CanEditInstances,
    ref: str,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Resize a VM: more vCPUs and memory also while it runs (plugged in), less while it is
    stopped; grow its disk, online too. Growth counts against the workspace's quota."""
    op_id = cloud.instances.resize(ctx, ref, cpus=body.cpus, memory=body.memory, disk=body.disk)
    return accepted(cloud, ctx, op_id, wait, response)


class InstanceUpdate(BaseModel):
    name: str = Field(
        description="A new name, unique in the workspace (a VM's as wide as at create, a container's a DNS "
        "label); id, address and hostname stay."
    )


@router.patch("/{ref}", response_model=InstancePublic)
def update_instance(body: InstanceUpdate, cloud: CloudDep, ctx: CanEditInstances, ref: str) -> InstancePublic:
    """Rename an instance."""
    instance_id = cloud.instances.rename(ctx, ref, body.name)
    with cloud.db.sessions() as session:  # the primary: a read replica may not have the new name yet
        return instances_public(session, ctx, [cloud.instances.get(session, ctx, instance_id)])[0]


class Clone(BaseModel):
    name: str = Field(description="The new VM's name.", examples=["web2"])
    mode: Literal["linked", "full"] = Field(
        "linked",
        description="linked: keeps only what differs from the base image and stays backed by it "
        "(fast, small); full: a standalone copy.",
    )
    snapshot: str | None = Field(
        None, description="Clone this snapshot (name or id) of the VM, which may then be running."
    )
    start: bool = Field(True, description="Start the clone once made.")
    hostname: str | None = Field(
        None, description="Default: the new name, or one made from it (my_vm -> my-vm)."
    )
    ssh_keys: list[str] | None = Field(None, description="Default: the source VM's keys.")


@router.post("/{ref}/clone", status_code=202, response_model=OperationPublic)
def clone_instance(
    body: Clone,
    cloud: CloudDep,
    ctx: CanCreateInstances,
    ref: str,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Clone a stopped VM, or a snapshot of a VM, into a new VM with its own name, address and
    seed. Counts against the quota like a create."""
    req = CloneRequest(
        name=body.name,
        linked=body.mode == "linked",
        snapshot=body.snapshot,
        start=body.start,
        hostname=body.hostname,
        ssh_keys=tuple(body.ssh_keys) if body.ssh_keys is not None else None,
    )
    _, op_id = cloud.clones.clone(ctx, ref, req)
    return accepted(cloud, ctx, op_id, wait, response)


@router.delete("/{ref}", status_code=202, response_model=OperationPublic)
def delete_instance(
    cloud: CloudDep,
    ctx: CanDeleteInstances,
    ref: str,
    response: Response,
    force: bool = Query(False, description="Delete even when running."),
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Delete an instance with its disks, seed and address."""
    return accepted(cloud, ctx, cloud.instances.action(ctx, ref, "delete", force=force), wait, response)
