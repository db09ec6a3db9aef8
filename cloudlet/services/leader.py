"""Leader locks: one replica at a time runs a given controller (e.g. the pool controller).

A lock is a row (name, holder, expiry). The holder renews it on every pass; another replica takes it
only once it lapsed, so a replica that dies hands its controllers over within one ``ttl``. Taking or
renewing is one short transaction with the row locked (FOR UPDATE on PostgreSQL; SQLite has one
writer), so two replicas never both believe they lead.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from cloudlet.db.models import LeaderLock, utcnow
from cloudlet.db.session import SessionFactory, transaction


class Leadership:
    def __init__(self, sessions: SessionFactory, holder: str, ttl: float) -> None:
        self.sessions = sessions
        self.holder = holder
        self.ttl = timedelta(seconds=ttl)

    def hold(self, name: str) -> bool:
        """Take or renew lock ``name``; False while another live replica holds it."""
        now = utcnow()
        try:
            with transaction(self.sessions) as s:
                row = s.get(LeaderLock, name, with_for_update=True)
                if row is None:
                    s.add(LeaderLock(name=name, holder=self.holder, expires_at=now + self.ttl))
                    return True
                if row.holder != self.holder and row.expires_at > now:
                    return False
                row.holder, row.expires_at = self.holder, now + self.ttl
                return True
        except IntegrityError:  # another replica inserted it at the same moment: it leads
            return False

    def release(self, name: str) -> None:
        """Give the lock up (at shutdown), so another replica need not wait for it to lapse."""
        with transaction(self.sessions) as s:
            s.execute(delete(LeaderLock).where(LeaderLock.name == name, LeaderLock.holder == self.holder))
