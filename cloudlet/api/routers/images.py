"""VM disk images."""

from __future__ import annotations

import shutil

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
from cloudlet.api.limits import streamed_body
from cloudlet.api.routers.operations import WaitParam, accepted
from cloudlet.api.schemas import ImageFormat, ImageImport, ImagePublic, ImageUpdate, OperationPublic
from cloudlet.errors import Invalid
from cloudlet.services.image_download import too_big
from cloudlet.services.images import FREE_SPACE_RESERVE, ImageProperties

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
    """Import a qcow2, raw or ISO image from a path on the server host or an http(s) URL."""
    props = ImageProperties(os=body.os, min_disk=body.min_disk, min_memory=body.min_memory)
    if body.url is not None and body.source_path is None:
        op_id = cloud.images.import_url(
            ctx, body.name, body.url, sha256=body.sha256, fmt=body.format, props=props
        )
    elif body.source_path is not None and body.url is None:
        if body.sha256 is not None:
            raise Invalid("sha256 is checked on downloads (url) only", code="invalid_source")
        op_id = cloud.images.import_path(ctx, body.name, body.source_path, fmt=body.format, props=props)
    else:
        raise Invalid("give either url or source_path", code="invalid_source")
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
@streamed_body
async def upload_image(
    request: Request,
    cloud: CloudDep,
    ctx: CanCreateImages,
    response: Response,
    name: str = Query(..., description="Image name."),
    format: ImageFormat | None = Query(None, description="What the file must be; detected when left out."),
    os: str | None = Query(None, max_length=64, description="The guest OS."),
    min_disk: int | None = Query(None, ge=1, description="Smallest disk (GiB) an instance gets."),
    min_memory: int | None = Query(None, ge=1, description="Least memory (MiB) an instance gets."),
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Import an image streamed as the request body (application/octet-stream), never held in memory."""
    # Authenticated by now (dependencies run first, and no byte of the body has been read).
    props = ImageProperties(os=os, min_disk=min_disk, min_memory=min_memory).checked()
    staging = cloud.images.staging_path(name)
    room = shutil.disk_usage(staging.parent).free - FREE_SPACE_RESERVE
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > room:
        raise too_big(int(declared), max(room, 0))
    try:
        with staging.open("wb") as fh:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > room:
                    raise too_big(size, max(room, 0))
                fh.write(chunk)
        op_id = await run_in_threadpool(
            lambda: cloud.images.import_staged(ctx, name, staging, fmt=format, props=props)
        )
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
    """Change an image's properties, or publish it to every workspace (system admins only)."""
    properties = body.model_dump(include={"os", "min_disk", "min_memory"} & body.model_fields_set)
    return ImagePublic.model_validate(
        cloud.images.update(ctx, ref, public=body.public, properties=properties)
    )
