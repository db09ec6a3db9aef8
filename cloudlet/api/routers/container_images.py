"""Container images on the engine, and image builds from Dockerfile projects."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from cloudlet.api.deps import CanCreateImages, CanDeleteImages, CanViewImages, CloudDep
from cloudlet.api.routers.operations import WaitParam, accepted
from cloudlet.api.schemas import OperationPublic
from cloudlet.drivers.containers import ContainerImage
from cloudlet.errors import DriverUnavailable
from cloudlet.services.cloud import Cloud
from cloudlet.services.container_images import ContainerImages

router = APIRouter(tags=["container images"])


class ContainerImagePublic(BaseModel):
    id: str
    short_id: str
    tags: list[str] = Field(description="repo:tag names; empty for a dangling image.")
    size: int = Field(description="Bytes.")
    created: datetime
    in_use: int = Field(description="Containers (any state) made from it.")


class PullRequest(BaseModel):
    image: str = Field(examples=["debian:12"])


class RegistryImagePublic(BaseModel):
    name: str
    description: str
    stars: int
    official: bool


class PruneResult(BaseModel):
    removed: list[str]
    space_reclaimed: int


class BuildRequest(BaseModel):
    tags: list[str] = Field(
        default_factory=list, description="repo:tag names; default <project>:latest.", examples=[["web:1"]]
    )


def image_service(cloud: Cloud) -> ContainerImages:
    if cloud.container_images is None:
        raise DriverUnavailable("containers are off on this server (container_driver = none)")
    return cloud.container_images


def image_public(i: ContainerImage) -> ContainerImagePublic:
    short = i.id.removeprefix("sha256:")[:12]
    return ContainerImagePublic(
        id=i.id, short_id=short, tags=list(i.tags), size=i.size, created=i.created, in_use=i.in_use
    )


@router.get("/container-images", response_model=list[ContainerImagePublic])
def list_container_images(
    cloud: CloudDep,
    ctx: CanViewImages,
    filter: str | None = Query(
        None, max_length=200, description="Keep images whose tag or id contains this."
    ),
) -> list[ContainerImagePublic]:
    """Images on the container host, newest first."""
    return [image_public(i) for i in image_service(cloud).local(ctx, filter)]


@router.get("/container-images/search", response_model=list[RegistryImagePublic])
def search_container_images(
    cloud: CloudDep,
    ctx: CanViewImages,
    q: str = Query(min_length=1, max_length=128),
    limit: int = Query(25, ge=1, le=100),
) -> list[RegistryImagePublic]:
    """Search the registry (Docker Hub). 502 `registry_unreachable` when no registry answers."""
    return [RegistryImagePublic(**vars(r)) for r in image_service(cloud).search(q, limit)]


@router.post("/container-images/pull", status_code=202, response_model=OperationPublic)
def pull_container_image(
    body: PullRequest,
    cloud: CloudDep,
    ctx: CanCreateImages,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Pull an image; the operation's log (`GET /operations/{id}/log`) shows the progress. With no
    registry reachable the operation fails with `registry_unreachable` (502) within moments."""
    return accepted(cloud, ctx, image_service(cloud).pull(ctx, body.image), wait, response)


@router.post("/container-images/prune", response_model=PruneResult)
def prune_container_images(cloud: CloudDep, ctx: CanDeleteImages) -> PruneResult:
    """Remove dangling (untagged, unused) images."""
    return PruneResult(**image_service(cloud).prune(ctx))


@router.get("/container-images/{ref:path}", response_model=ContainerImagePublic)
def get_container_image(cloud: CloudDep, ctx: CanViewImages, ref: str) -> ContainerImagePublic:
    """One image by repo:tag or id."""
    return image_public(image_service(cloud).get(ctx, ref))


@router.delete("/container-images/{ref:path}", status_code=204)
def delete_container_image(
    cloud: CloudDep,
    ctx: CanDeleteImages,
    ref: str,
    force: bool = Query(False, description="Even when in use."),
) -> Response:
    """Delete an image; 409 `image_in_use` while a container uses it."""
    image_service(cloud).delete(ctx, ref, force=force)
    return Response(status_code=204)


@router.post("/projects/{name}/build", status_code=202, response_model=OperationPublic)
def build_project(
    name: str,
    body: BuildRequest,
    cloud: CloudDep,
    ctx: CanCreateImages,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Build an image from a project's Dockerfile. Follow the build output live with
    `GET /operations/{id}/log?follow=true` (or `operation.log` events); the operation's result
    holds the image id and tags; a failing build names the failing step and its output."""
    context = cloud.projects.context_dir(ctx, name)
    tags = body.tags or [f"{name}:latest"]
    return accepted(cloud, ctx, image_service(cloud).build(ctx, context, tags, name), wait, response)
