"""Small integer ids for APIs of replaced systems that number their VMs 1, 2, 3... (VMs only:
those systems had no containers).

A number is given once only: when its VM is deleted its row goes (with the VM's, by the foreign
key), and the table's key never hands it out again (SQLite AUTOINCREMENT, PostgreSQL's sequence),
so a script holding an old id finds no VM rather than someone else's. VMs made elsewhere (the
native API, the dashboard) are numbered the first time the list is asked for, in creation order."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudlet.db.models import Instance, OSCloudId
from cloudlet.db.session import SessionFactory, transaction


def number_instances(sessions: SessionFactory, workspace_id: str) -> list[tuple[int, Instance]]:
    """Every instance of the workspace with its integer id (numbering new ones), by id."""
    with transaction(sessions) as s:
        numbered = dict(_numbered(s, workspace_id))
        vms = (
            select(Instance)
            .where(Instance.workspace_id == workspace_id, Instance.kind == "vm")
            .order_by(Instance.created_at, Instance.id)
        )
        for inst in s.scalars(vms):
            if inst.id not in {i.id for i in numbered.values()}:
                try:
                    with s.begin_nested():
                        s.add(OSCloudId(instance_id=inst.id))
                except IntegrityError:
                    continue  # numbered concurrently
        return sorted(_numbered(s, workspace_id), key=lambda pair: pair[0])


def _numbered(s: Session, workspace_id: str) -> list[tuple[int, Instance]]:
    rows = s.execute(
        select(OSCloudId.id, Instance)
        .join(Instance, Instance.id == OSCloudId.instance_id)
        .where(Instance.workspace_id == workspace_id, Instance.kind == "vm")
    ).all()
    return [(n, inst) for n, inst in rows]


def instance_for_number(sessions: SessionFactory, workspace_id: str, number: int) -> Instance | None:
    with sessions() as s:
        return s.scalar(
            select(Instance)
            .join(OSCloudId, OSCloudId.instance_id == Instance.id)
            .where(OSCloudId.id == number, Instance.workspace_id == workspace_id, Instance.kind == "vm")
        )


def number_of(sessions: SessionFactory, instance_id: str) -> int:
    with transaction(sessions) as s:
        n = s.scalar(select(OSCloudId.id).where(OSCloudId.instance_id == instance_id))
        if n is None:
            row = OSCloudId(instance_id=instance_id)
            s.add(row)
            s.flush()
            n = row.id
        return int(n)
