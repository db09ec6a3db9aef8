"""VM disk images."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from cloudlet.api.deps import (
    CanCreateImages,
    CanDeleteImages,
    CanEditImages,
    CanViewImages,
    CloudDep,
    ReadSession,
)
from cloudlet.api.routers.operations import WaitParam, accepted
from cloudlet.api.schemas import ImageImport, ImagePublic, ImageUpdate, OperationPublic

router = APIRouter(prefix="/images", tags=["images"])


@router.get("", response_model=list[ImagePublic])
def list_images(cloud: CloudDep, session: ReadSession, ctx: CanViewImages) -> list[ImagePublic]:
    """List the workspace's images."""
    return [ImagePublic.model_validate(i) for i in cloud.images.all(session, ctx)]


@router.post("", status_code=202, response_model=OperationPublic)
def import_image(
    body: ImageImport,
    cloud: CloudDep,
    ctx: CanCreateImages,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Import a qcow2 or raw image from a path on the server host."""
    op_id = cloud.images.import_path(ctx, body.name, body.source_path)
    return accepted(cloud, ctx, op_id, wait, response)


@router.post(
    "/upload",
    status_code=202,
    response_model=OperationPublic,
    openapi_extra={
        "requestBody": {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        }
    },
)
async def upload_image(
    request: Request,
    cloud: CloudDep,
    ctx: CanCreateImages,
    response: Response,
    name: str = Query(..., description="Image name."),
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Import an image streamed as the request body (application/octet-stream), never held in memory."""
    staging = cloud.images.staging_path(name)
    try:
        with staging.open("wb") as fh:
            async for chunk in request.stream():
                fh.write(chunk)
        op_id = await run_in_threadpool(cloud.images.import_staged, ctx, name, staging)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return await run_in_threadpool(accepted, cloud, ctx, op_id, wait, response)


@router.get("/{ref}", response_model=ImagePublic)
def get_image(cloud: CloudDep, session: ReadSession, ctx: CanViewImages, ref: str) -> ImagePublic:
    """Show an image by name or id."""
    return ImagePublic.model_validate(cloud.images.get(session, ctx, ref))


@router.delete("/{ref}", status_code=202, response_model=OperationPublic)
def delete_image(
    cloud: CloudDep, ctx: CanDeleteImages, ref: str, response: Response, wait: float | None = WaitParam
) -> OperationPublic:
    """Delete an image (409 while an instance uses it)."""
    return accepted(cloud, ctx, cloud.images.delete(ctx, ref), wait, response)


@router.patch("/{ref}", response_model=ImagePublic)
def update_image(cloud: CloudDep, ctx: CanEditImages, ref: str, body: ImageUpdate) -> ImagePublic:
    """Publish an image to every workspace, or withdraw it (system admins only)."""
    return ImagePublic.model_validate(cloud.images.publish(ctx, ref, body.public))
