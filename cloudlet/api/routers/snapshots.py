"""VM snapshots: /instances/{vm}/snapshots."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from cloudlet.api.deps import CanEditInstances, CanViewInstances, CloudDep
from cloudlet.api.routers.operations import WaitParam, accepted
from cloudlet.api.schemas import OperationPublic

router = APIRouter(prefix="/instances/{ref}/snapshots", tags=["snapshots"])


class SnapshotCreate(BaseModel):
    name: str = Field(max_length=63)
    description: str = Field("", max_length=1024)


class SnapshotPublic(BaseModel):
    id: str
    name: str
    description: str | None
    with_memory: bool = Field(description="The VM ran when it was taken: reverting resumes it running.")
    status: str = Field(description="creating, ready or deleting")
    created_at: datetime
    cpus: int | None = Field(description="The VM's vCPUs when taken: a revert brings them back.")
    memory: int | None = Field(
        validation_alias="memory_mb", description="Its memory (MiB) when taken: a revert brings it back."
    )
    disk: int | None = Field(
        validation_alias="disk_gb", description="Its disk size (GB) when taken: a revert brings it back."
    )


@router.get("", response_model=list[SnapshotPublic])
def list_snapshots(ref: str, cloud: CloudDep, ctx: CanViewInstances) -> list[SnapshotPublic]:
    """A VM's snapshots, oldest first."""
    with cloud.db.reads() as s:
        return [
            SnapshotPublic.model_validate(x, from_attributes=True) for x in cloud.snapshots.list(s, ctx, ref)
        ]


@router.post("", status_code=202, response_model=OperationPublic)
def create_snapshot(
    ref: str,
    body: SnapshotCreate,
    cloud: CloudDep,
    ctx: CanEditInstances,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Snapshot a VM: its disk, and its memory while it runs (it keeps running)."""
    return accepted(cloud, ctx, cloud.snapshots.create(ctx, ref, body.name, body.description), wait, response)


@router.post("/{snapshot}/revert", status_code=202, response_model=OperationPublic)
def revert_snapshot(
    ref: str,
    snapshot: str,
    cloud: CloudDep,
    ctx: CanEditInstances,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Return the VM to a snapshot; what was written since is lost. A snapshot with memory resumes
    the VM running; a disk-only one leaves it stopped."""
    return accepted(cloud, ctx, cloud.snapshots.revert(ctx, ref, snapshot), wait, response)


@router.delete("/{snapshot}", status_code=202, response_model=OperationPublic)
def delete_snapshot(
    ref: str,
    snapshot: str,
    cloud: CloudDep,
    ctx: CanEditInstances,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Delete a snapshot (the VM keeps its current state)."""
    return accepted(cloud, ctx, cloud.snapshots.delete(ctx, ref, snapshot), wait, response)
