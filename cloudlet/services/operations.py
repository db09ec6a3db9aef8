"""Operations: every long or mutating action is recorded, run by a worker pool, and observable.

A service creates the Operation row in the same transaction as the change it starts (so the two
are atomic), then ``launch``es a step function. The step function registers an undo after each
step that creates something; if a later step fails, the undos run newest first and the operation
fails with the error, so a failed create leaves nothing behind.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloudlet.db.models import Operation, utcnow
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.errors import CloudletError, DriverError, NotFound
from cloudlet.services.context import RequestContext
from cloudlet.services.events import Event, EventBus

log = logging.getLogger(__name__)
T = TypeVar("T")


class OpStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (OpStatus.SUCCEEDED, OpStatus.FAILED)


def operation_json(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "kind": op.kind,
        "target_type": op.target_type,
        "target_id": op.target_id,
        "status": op.status,
        "progress": op.progress,
        "message": op.message,
        "error": op.error,
        "result": op.result,
        "created_at": op.created_at.isoformat() if op.created_at else None,
        "started_at": op.started_at.isoformat() if op.started_at else None,
        "finished_at": op.finished_at.isoformat() if op.finished_at else None,
    }


class OperationContext:
    """Handed to a step function: progress reporting, undo registration and retries."""

    def __init__(self, ops: Operations, op_id: str, workspace_id: str) -> None:
        self._ops = ops
        self.op_id = op_id
        self.workspace_id = workspace_id
        self._undo: list[tuple[str, Callable[[], Any]]] = []

    def progress(self, percent: int, message: str | None = None) -> None:
        self._ops._update(self.op_id, progress=max(0, min(100, percent)), message=message)

    def on_undo(self, what: str, fn: Callable[[], Any]) -> None:
        self._undo.append((what, fn))

    def run_undo(self) -> None:
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except Exception:  # an undo must not hide the original error nor stop the other undos
                log.exception("undo step %r of operation %s failed", what, self.op_id)

    def retry(self, fn: Callable[[], T], *, attempts: int = 4, base_delay: float = 0.5) -> T:
        """Call ``fn``, retrying transient driver errors with exponential backoff and jitter."""
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except DriverError as err:
                if not err.transient or attempt == attempts:
                    raise
                delay = base_delay * 2 ** (attempt - 1) * (0.5 + random.random())
                log.warning(
                    "transient error (%s); retry %d/%d in %.1fs", err.detail, attempt, attempts, delay
                )
                time.sleep(delay)
        raise AssertionError("unreachable")


StepFn = Callable[[OperationContext], dict[str, Any] | None]


class Operations:
    def __init__(
        self, sessions: SessionFactory, reads: SessionFactory, bus: EventBus, runner_id: str, workers: int = 8
    ) -> None:
        self.runner_id = runner_id  # the process that runs what it records
        self.sessions = sessions
        self.reads = reads
        self.bus = bus
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        self._finished = threading.Condition()
        self._finish_count = 0  # bumped under _finished, so a waiter cannot miss a finish

    def record(
        self, session: Session, ctx: RequestContext, kind: str, target_type: str, target_id: str | None
    ) -> Operation:
        """Add a pending Operation to the caller's transaction."""
        op = Operation(
            workspace_id=ctx.workspace_id,
            kind=kind,
            target_type=target_type,
            target_id=target_id,
            status="pending",
            runner_id=self.runner_id,
        )
        session.add(op)
        session.flush()
        return op

    def launch(self, op: Operation, step: StepFn, *, finally_: Callable[[], None] | None = None) -> None:
        """Run ``step`` on the worker pool. Call after the transaction that recorded ``op`` committed."""
        self._publish(op)
        self._pool.submit(self._run, op.id, op.workspace_id, step, finally_)

    def _run(self, op_id: str, workspace_id: str, step: StepFn, finally_: Callable[[], None] | None) -> None:
        ctx = OperationContext(self, op_id, workspace_id)
        self._update(op_id, status=OpStatus.RUNNING, started_at=utcnow())
        try:
            result = step(ctx)
        except Exception as exc:
            ctx.run_undo()
            if isinstance(exc, CloudletError):
                error = {**exc.extra, "code": exc.code, "status": exc.status, "detail": exc.detail}
            else:
                log.exception("operation %s failed unexpectedly", op_id)
                error = {"code": "internal_error", "status": 500, "detail": f"{type(exc).__name__}: {exc}"}
            self._finish(op_id, OpStatus.FAILED, error=error, finally_=finally_)
        else:
            self._finish(op_id, OpStatus.SUCCEEDED, result=result, finally_=finally_)

    def _finish(
        self,
        op_id: str,
        status: OpStatus,
        *,
        finally_: Callable[[], None] | None,
        error: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        if finally_ is not None:
            try:
                finally_()
            except Exception:
                log.exception("clean-up of operation %s failed", op_id)
        values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error, "result": result}
        if status is OpStatus.SUCCEEDED:
            values["progress"] = 100
        self._update(op_id, **values)
        with self._finished:
            self._finish_count += 1
            self._finished.notify_all()

    def _update(self, op_id: str, **values: Any) -> None:
        with transaction(self.sessions) as s:
            s.execute(update(Operation).where(Operation.id == op_id).values(**values))
            op = s.get(Operation, op_id)
            if op is not None:
                s.refresh(op)
                self._publish(op)

    def _publish(self, op: Operation) -> None:
        self.bus.publish(Event("operation.updated", op.workspace_id, operation_json(op)))

    def fail_interrupted(self, op_id: str, detail: str) -> None:
        """Mark an operation a dead server process left behind."""
        error = {"code": "interrupted", "status": 500, "detail": detail}
        self._update(op_id, status=OpStatus.FAILED, finished_at=utcnow(), error=error)

    def get(self, session: Session, ctx: RequestContext, op_id: str) -> Operation:
        op = session.scalar(
            select(Operation).where(Operation.id == op_id, Operation.workspace_id == ctx.workspace_id)
        )
        if op is None:
            raise NotFound(f"operation {op_id} not found", code="operation_not_found")
        return op

    def wait(self, ctx: RequestContext, op_id: str, timeout: float) -> Operation:
        """Block until the operation is final or ``timeout`` passes; return it as it is then.
        Polls the database as well, so it also sees operations that another replica runs."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            with self._finished:
                seen = self._finish_count
            with self.reads() as s:
                op = self.get(s, ctx, op_id)
            remaining = deadline - time.monotonic()
            if OpStatus(op.status).is_final or remaining <= 0:
                return op
            self._wait_for_a_finish(seen, min(remaining, 0.5))

    def _wait_for_a_finish(self, seen: int, timeout: float) -> None:
        with self._finished:
            self._finished.wait_for(lambda: self._finish_count != seen, timeout=timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
