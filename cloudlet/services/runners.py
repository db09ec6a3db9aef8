"""Server processes (replicas) and their heartbeats.

Each process registers a Runner row and refreshes its heartbeat; a runner whose heartbeat is older
than ``stale_after`` is taken for dead. Start-up recovery then touches only the operations of dead
runners, so several replicas on one PostgreSQL never roll back each other's work in flight.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from sqlalchemy import delete, select, update

from cloudlet.db.models import Runner, new_id, utcnow
from cloudlet.db.session import SessionFactory, transaction

log = logging.getLogger(__name__)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Runners:
    def __init__(self, sessions: SessionFactory, interval: float) -> None:
        self.sessions = sessions
        self.interval = interval
        self.stale_after = timedelta(seconds=interval * 3)
        self.id = new_id()
        self._stop = threading.Event()

    def register(self) -> None:
        with transaction(self.sessions) as s:
            s.add(Runner(id=self.id, hostname=socket.gethostname(), pid=os.getpid()))
            # Rows of runners dead for long are history nobody needs.
            s.execute(delete(Runner).where(Runner.heartbeat_at < utcnow() - self.stale_after * 100))

    def beat(self) -> None:
        with transaction(self.sessions) as s:
            s.execute(update(Runner).where(Runner.id == self.id).values(heartbeat_at=utcnow()))

    def alive(self) -> set[str]:
        """Ids of the runners whose heartbeat is recent (this one included). A runner of this host
        whose process is gone is dead at once: a server restarted after ``kill -9`` need not wait
        for its predecessor's heartbeat to go stale."""
        host = socket.gethostname()
        with self.sessions() as s:
            rows = s.execute(
                select(Runner.id, Runner.hostname, Runner.pid).where(
                    Runner.heartbeat_at >= utcnow() - self.stale_after
                )
            ).all()
        return {rid for rid, hostname, pid in rows if hostname != host or _process_exists(pid)} | {self.id}

    def start(self) -> None:
        threading.Thread(target=self._loop, name="runner-heartbeat", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:
                log.exception("heartbeat failed")

    def stop(self) -> None:
        """Leave cleanly: other replicas need not wait for this runner's heartbeat to go stale."""
        self._stop.set()
        with transaction(self.sessions) as s:
            s.execute(delete(Runner).where(Runner.id == self.id))
