"""Engine and session factories.

SQLite gets WAL, foreign keys and a busy timeout. Its write transactions start with
``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes fails at once with
"database is locked" when another writer committed in between, which is exactly the concurrent
allocation case. Read-only sessions (``Database.reads``) keep plain deferred BEGIN so readers never
wait for writers.

SQLite has one writer at a time, and a writer that finds the database locked sleeps in SQLite's
busy handler (1, 2, 5, 10... ms) instead of being woken when the lock is free: with a few dozen
request threads writing, they spent most of their time asleep (21 checkout+checkin pairs/s in
bench/pool_checkout.py). So the threads of one process queue for writing on a lock of their own,
taken at BEGIN IMMEDIATE and released as soon as COMMIT or ROLLBACK returned; SQLite's own
locking still guards against other processes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SessionFactory = sessionmaker[Session]


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        args = {"timeout": 30, "check_same_thread": False, "factory": _writer_queue_connection()}
        engine = create_engine(url, connect_args=args, pool_size=10)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let the "begin" hook below emit BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


WRITE_WAIT = 30.0  # seconds a writer waits for the lock before "database is locked", as busy_timeout


class _QueuedWriter(sqlite3.Connection):
    """A connection whose write transactions hold its engine's writer lock (see the module doc)."""

    writer_lock: threading.Lock  # one per engine, set on the subclass made for it
    holding = False

    def begin_write(self) -> None:
        if not self.holding:
            if not self.writer_lock.acquire(timeout=WRITE_WAIT):
                raise sqlite3.OperationalError("database is locked (no write turn in 30 s)")
            self.holding = True

    def end_write(self) -> None:
        if self.holding:
            self.holding = False
            self.writer_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.end_write()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.end_write()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.end_write()


def _writer_queue_connection() -> type[_QueuedWriter]:
    """A connection class with a writer lock of its own, for one engine."""
    return type("QueuedWriter", (_QueuedWriter,), {"writer_lock": threading.Lock()})


def _sqlite_begin(conn: Any) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    if mode == "DEFERRED":
        conn.exec_driver_sql("BEGIN DEFERRED")
        return
    dbapi = conn.connection.dbapi_connection
    dbapi.begin_write()
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    except BaseException:
        dbapi.end_write()
        raise


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions: SessionFactory = sessionmaker(self.engine, expire_on_commit=False)
        read_engine = self.engine.execution_options(sqlite_begin="DEFERRED")
        self.reads: SessionFactory = sessionmaker(read_engine, expire_on_commit=False)

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def transaction(factory: SessionFactory) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception."""
    with factory() as session, session.begin():
        yield session
