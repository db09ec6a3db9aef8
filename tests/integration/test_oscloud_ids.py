"""OS Cloud ids on the real databases, SQLite and PostgreSQL: a deleted VM's number is never handed
to another VM (SQLite would give max(id)+1 again), also across a restart, and migration 0013 keeps
the numbers a database already had and claims the hostnames its VMs took from their names."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import delete, insert, select

from cloudlet.db import migrate
from cloudlet.db.models import Instance, OSCloudId, Workspace
from cloudlet.db.session import Database, transaction
from cloudlet.services.sequence_ids import instance_for_number, number_instances, number_of
from tests.integration.conftest import _drop_pg_database, _make_pg_database

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloudlet.db'}"
        return
    name, pg_url = _make_pg_database()
    try:
        yield pg_url
    finally:
        _drop_pg_database(name)


def upgrade_to(db: Database, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def add_vm(db: Database, workspace: str, name: str, hostname: str | None = None) -> str:
    """A VM row, written without the ORM's newer columns (so it works on an older schema too)."""
    vm_id = str(uuid.uuid4())
    with transaction(db.sessions) as s:
        s.execute(
            insert(Instance.__table__).values(  # type: ignore[arg-type]
                id=vm_id,
                workspace_id=workspace,
                name=name,
                kind="vm",
                state="running",
                hostname=hostname or name,
                ssh_keys=[],
                cpus=1,
                memory_mb=64,
                disk_gb=1,
                host="local",
            )
        )
    return vm_id


def forget(db: Database, vm_id: str) -> None:
    with transaction(db.sessions) as s:
        s.execute(delete(Instance).where(Instance.id == vm_id))  # its number goes by the foreign key


def test_numbers_are_never_given_twice(url: str) -> None:
    db = Database(url)
    try:
        upgrade_to(db, "0012")
        ws = str(uuid.uuid4())
        with transaction(db.sessions) as s:
            s.execute(insert(Workspace.__table__).values(id=ws, name="default"))  # type: ignore[arg-type]
        a, b = add_vm(db, ws, "a"), add_vm(db, ws, "b", hostname="other")
        with transaction(db.sessions) as s:  # numbered by the older version
            for vm_id in (a, b):
                s.execute(insert(OSCloudId.__table__).values(instance_id=vm_id))  # type: ignore[arg-type]

        migrate.upgrade(db.engine)  # 0013: the numbers stay; b's explicit hostname is not claimed
        assert [(n, i.name) for n, i in number_instances(db.sessions, ws)] == [(1, "a"), (2, "b")]
        with db.sessions() as s:
            assert dict(s.execute(select(Instance.name, Instance.dns_name)).all()) == {"a": "a", "b": None}

        c = add_vm(db, ws, "c")
        assert number_of(db.sessions, c) == 3
        forget(db, c)  # the newest number, the one max(id)+1 would give again
        assert instance_for_number(db.sessions, ws, 3) is None
        d = add_vm(db, ws, "d")
        assert number_of(db.sessions, d) == 4
        forget(db, b)
        forget(db, d)
    finally:
        db.dispose()

    db = Database(url)  # a restart: what the table remembers is in the database
    try:
        e = add_vm(db, ws, "e")
        assert number_of(db.sessions, e) == 5
        assert [(n, i.name) for n, i in number_instances(db.sessions, ws)] == [(1, "a"), (5, "e")]
        with db.sessions() as s:
            assert s.scalar(select(OSCloudId.id).where(OSCloudId.instance_id == a)) == 1
    finally:
        db.dispose()
