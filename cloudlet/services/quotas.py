"""Per-workspace quotas, enforced inside the transaction that claims the resources.

The workspace's quota row is locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises
writers anyway), usage is counted, and the new claim is refused if it would pass a limit; so
concurrent creates can never overshoot: 20 parallel creates against a quota of 5 create 5.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloudlet.db.models import Instance, IPAllocation, Network, Pool, PoolMember, Quota, Volume
from cloudlet.errors import Exhausted, Invalid

LIMITS = ("instances", "vcpus", "memory_mb", "disk_gb", "networks", "ips", "pool_checkouts")


class QuotaExceeded(Exhausted):
    code, title = "quota_exceeded", "Quota exceeded"


def usage(session: Session, workspace_id: str) -> dict[str, int]:
    totals = session.execute(
        select(
            func.count(Instance.id),
            func.coalesce(func.sum(Instance.cpus), 0),
            func.coalesce(func.sum(Instance.memory_mb), 0),
            func.coalesce(func.sum(Instance.disk_gb), 0),
        ).where(Instance.workspace_id == workspace_id)
    ).one()
    volumes_gb = (  # extra volumes count against disk_gb like the VMs' own disks
        session.scalar(
            select(func.coalesce(func.sum(Volume.size_gb), 0)).where(Volume.workspace_id == workspace_id)
        )
        or 0
    )
    networks = session.scalar(select(func.count()).where(Network.workspace_id == workspace_id)) or 0
    ips = (
        session.scalar(
            select(func.count())
            .select_from(IPAllocation)
            .join(Instance, Instance.id == IPAllocation.instance_id)
            .where(Instance.workspace_id == workspace_id)
        )
        or 0
    )
    checkouts = (
        session.scalar(
            select(func.count())
            .select_from(PoolMember)
            .join(Pool, Pool.id == PoolMember.pool_id)
            .where(Pool.workspace_id == workspace_id, PoolMember.status == "checked-out")
        )
        or 0
    )
    return {
        "instances": int(totals[0]),
        "vcpus": int(totals[1]),
        "memory_mb": int(totals[2]),
        "disk_gb": int(totals[3]) + int(volumes_gb),
        "networks": int(networks),
        "ips": int(ips),
        "pool_checkouts": int(checkouts),
    }


def limits(session: Session, workspace_id: str) -> dict[str, int | None]:
    row = session.get(Quota, workspace_id)
    return {name: getattr(row, name) if row else None for name in LIMITS}


def set_limits(session: Session, workspace_id: str, values: dict[str, int | None]) -> dict[str, int | None]:
    for name, value in values.items():
        if name not in LIMITS:
            raise Invalid(f"unknown quota {name!r}; use one of {', '.join(LIMITS)}", code="invalid_quota")
        if value is not None and value < 0:
            raise Invalid(f"quota {name} must be 0 or more (or null for no limit)", code="invalid_quota")
    row = session.get(Quota, workspace_id)
    if row is None:
        row = Quota(workspace_id=workspace_id)
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return limits(session, workspace_id)


def claim(session: Session, workspace_id: str, **adding: int) -> None:
    """Refuse (409 quota_exceeded) if adding these amounts passes any limit of the workspace.
    Call inside the transaction that then inserts the rows."""
    row = session.scalar(select(Quota).where(Quota.workspace_id == workspace_id).with_for_update())
    if row is None:
        return
    if all(getattr(row, name) is None for name in adding):
        return
    used = usage(session, workspace_id)
    for name, amount in adding.items():
        limit = getattr(row, name)
        if limit is not None and amount > 0 and used[name] + amount > limit:
            raise QuotaExceeded(
                f"quota {name} of this workspace is {limit}; {used[name]} used, {amount} more asked",
                quota=name,
                limit=limit,
                used=used[name],
                requested=amount,
            )
