"""Dockerfile projects: folders of files on the server that images are built from."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from cloudlet.api.deps import CanCreateImages, CanDeleteImages, CanEditImages, CanViewImages, CloudDep
from cloudlet.api.limits import streamed_body
from cloudlet.api.schemas import ProjectCreate, ProjectDetail, ProjectFilePublic, ProjectPublic
from cloudlet.errors import Invalid
from cloudlet.services.projects import MAX_FILE_BYTES, split_path

router = APIRouter(prefix="/projects", tags=["projects"])
FILE_PATH = "/{name}/files/{path:path}"


@router.get("", response_model=list[ProjectPublic])
def list_projects(cloud: CloudDep, ctx: CanViewImages) -> list[ProjectPublic]:
    """List the workspace's projects."""
    return [ProjectPublic.model_validate(p) for p in cloud.projects.list(ctx)]


@router.post("", status_code=201, response_model=ProjectPublic)
def create_project(body: ProjectCreate, cloud: CloudDep, ctx: CanCreateImages) -> ProjectPublic:
    """Create a project, optionally with its Dockerfile (409 when the name is taken)."""
    return ProjectPublic.model_validate(cloud.projects.create(ctx, body.name, body.dockerfile))


@router.get("/{name}", response_model=ProjectDetail)
def get_project(cloud: CloudDep, ctx: CanViewImages, name: str) -> ProjectDetail:
    """Show a project and its files."""
    info = cloud.projects.get(ctx, name)
    files = [ProjectFilePublic.model_validate(f) for f in cloud.projects.files(ctx, name)]
    return ProjectDetail(**ProjectPublic.model_validate(info).model_dump(), files=files)


@router.delete("/{name}", status_code=204)
def delete_project(cloud: CloudDep, ctx: CanDeleteImages, name: str) -> Response:
    """Delete a project and all its files."""
    cloud.projects.delete(ctx, name)
    return Response(status_code=204)


@router.get(
    FILE_PATH,
    response_class=Response,
    responses={
        200: {
            "description": "The file's bytes.",
            "content": {"text/plain": {}, "application/octet-stream": {}},
        }
    },
)
def read_file(cloud: CloudDep, ctx: CanViewImages, name: str, path: str) -> Response:
    """Download a file: text/plain when it is UTF-8 text, application/octet-stream otherwise."""
    data = cloud.projects.read_file(ctx, name, path)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return Response(data, media_type="application/octet-stream")
    return Response(data, media_type="text/plain; charset=utf-8")


@router.put(
    FILE_PATH,
    response_model=ProjectFilePublic,
    openapi_extra={
        "requestBody": {
            "description": "The file's new content, at most 10 MiB.",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
@streamed_body
async def write_file(
    request: Request, cloud: CloudDep, ctx: CanEditImages, name: str, path: str
) -> ProjectFilePublic:
    """Create or replace a file with the raw request body; missing folders are made."""
    # Authenticated by now; a bad path or an unknown project fails before any byte is read.
    split_path(path)
    await run_in_threadpool(cloud.projects.context_dir, ctx, name)
    too_large = Invalid(f"a file may hold at most {MAX_FILE_BYTES // 2**20} MiB", code="too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FILE_BYTES:
        raise too_large
    # Read at most the limit (plus one chunk) into memory, whatever the client declared.
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise too_large
        chunks.append(chunk)
    written = await run_in_threadpool(cloud.projects.write_file, ctx, name, path, b"".join(chunks))
    return ProjectFilePublic.model_validate(written)


@router.delete(FILE_PATH, status_code=204)
def delete_file(cloud: CloudDep, ctx: CanEditImages, name: str, path: str) -> Response:
    """Delete a file."""
    cloud.projects.delete_file(ctx, name, path)
    return Response(status_code=204)
