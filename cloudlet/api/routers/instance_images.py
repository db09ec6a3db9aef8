"""A stopped VM's disk published as an image; the installer ISO ejected from a VM's CD-ROM."""

from __future__ import annotations

from fastapi import APIRouter, Response

from cloudlet.api.deps import CanCreateImages, CanEditInstances, CloudDep
from cloudlet.api.routers.operations import WaitParam, accepted
from cloudlet.api.schemas import InstancePublish, OperationPublic
from cloudlet.services.images import ImageProperties

router = APIRouter(prefix="/instances", tags=["instances"])


@router.post("/{ref}/publish", status_code=202, response_model=OperationPublic)
def publish_instance(
    body: InstancePublish,
    cloud: CloudDep,
    ctx: CanCreateImages,
    ref: str,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Make a new image of a stopped VM's disk (flattened qcow2); 409 while the VM runs."""
    props = ImageProperties(os=body.os, min_disk=body.min_disk, min_memory=body.min_memory)
    op_id = cloud.instance_images.publish(ctx, ref, body.name, props)
    return accepted(cloud, ctx, op_id, wait, response)


@router.post("/{ref}/cdrom/eject", status_code=202, response_model=OperationPublic)
def eject_cdrom(
    cloud: CloudDep, ctx: CanEditInstances, ref: str, response: Response, wait: float | None = WaitParam
) -> OperationPublic:
    """Eject the installer ISO from a VM's CD-ROM (also while it runs): it boots from its disk next."""
    return accepted(cloud, ctx, cloud.instance_images.eject(ctx, ref), wait, response)
