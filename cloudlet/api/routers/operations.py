"""Operations: the record of every long action."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from cloudlet.api.deps import CloudDep, Ctx, ReadSession
from cloudlet.api.schemas import OperationPublic, Page
from cloudlet.api.streams import drain_batches
from cloudlet.db.models import Operation
from cloudlet.drivers.containers import Stream
from cloudlet.errors import NotFound
from cloudlet.services.cloud import Cloud
from cloudlet.services.context import RequestContext
from cloudlet.services.operations import OpStatus

router = APIRouter(prefix="/operations", tags=["operations"])

WaitParam = Query(
    None, ge=0, le=3600, description="Block up to this many seconds until the operation is final."
)


def accepted(
    cloud: Cloud, ctx: RequestContext, op_id: str, wait: float | None, response: Response
) -> OperationPublic:
    """The answer to a mutating call: the operation, 202 while it runs, 200 once it is final."""
    if wait:
        op = cloud.ops.wait(ctx, op_id, wait)
    else:
        with cloud.db.reads() as s:
            op = cloud.ops.get(s, ctx, op_id)
    response.headers["Location"] = f"/api/v1/operations/{op.id}"
    response.status_code = 200 if OpStatus(op.status).is_final else 202
    return OperationPublic.model_validate(op)


@router.get("", response_model=Page[OperationPublic])
def list_operations(
    session: ReadSession,
    ctx: Ctx,
    status: OpStatus | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> Page[OperationPublic]:
    """List operations, newest first."""
    query = select(Operation).where(Operation.workspace_id == ctx.workspace_id)
    if status:
        query = query.where(Operation.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Operation.created_at.desc()).limit(limit).offset(offset))
    return Page(
        items=[OperationPublic.model_validate(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get("/{op_id}", response_model=OperationPublic)
def get_operation(
    cloud: CloudDep, ctx: Ctx, op_id: str, response: Response, wait: float | None = WaitParam
) -> OperationPublic:
    """Show an operation; with `wait`, block until it is final or the time is up."""
    op = accepted(cloud, ctx, op_id, wait, response)
    response.status_code = 200
    return op


@router.get(
    "/{op_id}/log",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "The log, streamed."}},
)
async def operation_log(
    cloud: CloudDep,
    ctx: Ctx,
    op_id: str,
    follow: bool = Query(False, description="Stream new lines until the operation ends."),
) -> StreamingResponse:
    """The text log of an operation that keeps one (image builds and pulls)."""

    def check() -> None:
        with cloud.db.reads() as s:
            cloud.ops.get(s, ctx, op_id)
        if not cloud.oplogs.exists(op_id):
            raise NotFound(f"operation {op_id} has no log", code="log_not_found")

    def is_final() -> bool:
        with cloud.db.reads() as s:
            return OpStatus(cloud.ops.get(s, ctx, op_id).status).is_final

    await run_in_threadpool(check)
    lines = Stream(cloud.oplogs.read(op_id, follow=follow, is_final=is_final))

    async def body() -> AsyncIterator[bytes]:
        async for batch in drain_batches(lines):  # a long build log leaves in a few big chunks
            yield b"".join(batch)

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8")
