"""The audit log: every mutating call, with who, what, target, when, from where and how it ended.

Entries are queued by the request and written in batches by one thread, so auditing costs a
request nothing but a queue put; ``flush`` waits until everything queued is stored.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select

from cloudlet.db.models import AuditEntry
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.services.context import RequestContext

log = logging.getLogger(__name__)


def entry_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "workspace_id": e.workspace_id,
        "user_id": e.user_id,
        "principal": e.principal,
        "token_id": e.token_id,
        "action": e.action,
        "method": e.method,
        "path": e.path,
        "target": e.target,
        "source": e.source,
        "status": e.status,
        "result": e.result,
    }


class AuditLog:
    def __init__(self, sessions: SessionFactory, reads: SessionFactory) -> None:
        self.sessions = sessions
        self.reads = reads
        self._queue: queue.Queue[AuditEntry | None] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._write_loop, name="audit", daemon=True)
        self._thread.start()

    def record(self, **fields: Any) -> None:
        with self._cond:
            self._pending += 1
        self._queue.put(AuditEntry(**fields))

    def record_session(self, ctx: RequestContext, action: str, path: str, target: str, status: int) -> None:
        """A websocket session (a terminal): the HTTP middleware does not see those."""
        self.record(
            workspace_id=ctx.workspace_id or None,
            user_id=ctx.user_id,
            principal=ctx.principal,
            token_id=ctx.token_id,
            action=action,
            method="WS",
            path=path[:2000],
            target=target[:255],
            source=ctx.source,
            status=status,
            result="ok" if status < 400 else "refused",
        )

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 500:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            try:
                with transaction(self.sessions) as s:
                    s.add_all(batch)
            except Exception:
                log.exception("writing %d audit entries failed", len(batch))
            with self._cond:
                self._pending -= len(batch)
                self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._pending == 0, timeout=timeout)

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def query(
        self,
        *,
        workspace_id: str | None,
        user_id: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditEntry]:
        """Newest first. ``workspace_id`` None means every workspace (system admins only)."""
        self.flush()
        q = select(AuditEntry)
        if workspace_id is not None:
            q = q.where(AuditEntry.workspace_id == workspace_id)
        if user_id:
            q = q.where(AuditEntry.user_id == user_id)
        if action:
            q = q.where(AuditEntry.action.contains(action, autoescape=True))
        if since:
            q = q.where(AuditEntry.at >= since)
        if until:
            q = q.where(AuditEntry.at < until)
        with self.reads() as s:
            return list(s.scalars(q.order_by(AuditEntry.at.desc()).limit(limit).offset(offset)))

    def export(self, *, workspace_id: str | None, since: datetime | None = None) -> Iterator[bytes]:
        """Every matching entry as JSON lines, oldest first, read in pages (never all at once)."""
        self.flush()
        after: tuple[datetime, str] | None = None
        while True:
            q = select(AuditEntry).order_by(AuditEntry.at, AuditEntry.id).limit(1000)
            if workspace_id is not None:
                q = q.where(AuditEntry.workspace_id == workspace_id)
            if since:
                q = q.where(AuditEntry.at >= since)
            if after is not None:
                q = q.where(
                    (AuditEntry.at > after[0]) | ((AuditEntry.at == after[0]) & (AuditEntry.id > after[1]))
                )
            with self.reads() as s:
                rows = list(s.scalars(q))
            if not rows:
                return
            for row in rows:
                yield (json.dumps(entry_json(row)) + "\n").encode()
            after = (rows[-1].at, rows[-1].id)
