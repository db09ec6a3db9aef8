"""Reservation pools: ready VMs of one template that people check out, use and check back in.

A checkout is a single conditional UPDATE (``status`` from available to checked-out) on one
candidate row, retried on the next candidate when a concurrent request took it first; so N
concurrent clients get N distinct VMs and no VM is ever held twice, with SQLite or PostgreSQL.

The controller (``reconcile``, run by a thread every few seconds) keeps ``min_ready`` VMs
provisioning or available without ever passing ``max_size``, turns booted VMs available, replaces
failed ones, ends expired leases (with a warning event first), removes VMs idle past
``idle_timeout`` above ``min_ready``, and resets returned VMs: ``reset`` replaces the VM with a
fresh one from the template (nothing of the last holder survives), ``destroy`` removes it,
``reuse`` hands it out again as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from anyio import to_thread
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from cloudlet.db.models import Instance, Pool, PoolLease, PoolMember, new_id, utcnow
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.errors import CloudletError, Conflict, Exhausted, Forbidden, Invalid, NotFound
from cloudlet.services import quotas
from cloudlet.services.cloudinit import check_user_data
from cloudlet.services.context import RequestContext
from cloudlet.services.events import Event, EventBus
from cloudlet.services.instances import CreateRequest, Instances, check_ssh_key
from cloudlet.services.leader import Leadership
from cloudlet.services.names import check_name, insert_unique, is_uuid, lookup
from cloudlet.services.networks import instance_nics

log = logging.getLogger(__name__)

ON_CHECKIN = ("reset", "reuse", "destroy")
BOOT_ESTIMATE = 30  # seconds a fresh VM takes to become available, for Retry-After
BOOT_TIMEOUT = timedelta(minutes=10)  # a VM not reachable by then failed: it is replaced
CLAIM_GRACE = timedelta(minutes=2)  # a claimed place without its VM by then was abandoned: freed
PROBE_TIMEOUT = 1.0
LEADER_LOCK = "pools"
VM_NOT_FOUND = "Could not find a vm with given details"  # the replaced system's words
WARN_BEFORE = timedelta(minutes=5)


class PoolExhausted(Exhausted):
    code, title = "pool_exhausted", "Pool exhausted"


@dataclass(frozen=True)
class PoolSpec:
    name: str
    image: str
    cpus: int = 1
    memory: int = 512
    disk: int = 1
    network: str = "default"
    ssh_keys: tuple[str, ...] = ()
    min_ready: int = 1
    max_size: int = 5
    lease_default: int = 3600
    lease_max: int = 86400
    on_checkin: str = "reset"
    idle_timeout: int | None = None
    user_data: str | None = None
    ssh_user: str = "root"
    probe_port: int | None = 22
    legacy_api: bool = False


@dataclass(frozen=True)
class Checkout:
    instance_id: str
    name: str
    ip: str | None
    ssh_user: str
    lease_expires_at: Any


class _Line:
    """First come, first served for callers that wait, on the server's event loop: only the ticket
    being served tries to check out, the others sleep until a VM comes back, the head leaves or a
    second passes. Waiting holds no worker thread, so check-ins are never starved by waiters."""

    def __init__(self, loop: asyncio.AbstractEventLoop, next_ticket: int = 0) -> None:
        self.loop = loop
        self.next_ticket = next_ticket
        self.serving = 0
        self.gone: set[int] = set()  # tickets whose holder left before its turn
        self.changed = asyncio.Event()

    def empty(self) -> bool:
        return self.serving == self.next_ticket

    def take(self) -> int:
        ticket, self.next_ticket = self.next_ticket, self.next_ticket + 1
        return ticket

    def notify(self) -> None:
        """Wake every sleeper (they re-check); later sleepers wait for the next change."""
        self.changed.set()
        self.changed = asyncio.Event()

    def leave(self, ticket: int) -> None:
        """Give up a place, served or not."""
        if ticket == self.serving:
            self.serving += 1
            while self.serving in self.gone:
                self.gone.discard(self.serving)
                self.serving += 1
        elif ticket > self.serving:
            self.gone.add(ticket)
        self.notify()

    async def sleep(self, seconds: float) -> None:
        """Until the next change, or ``seconds`` (checks made meanwhile by other replicas are not
        signalled here: the timeout is the poll that notices them)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), max(0.0, min(seconds, 1.0)))


class Pools:
    def __init__(
        self,
        sessions: SessionFactory,
        reads: SessionFactory,
        bus: EventBus,
        instances: Instances,
        *,
        min_lease: int = 60,
        leadership: Leadership | None = None,
    ) -> None:
        self.sessions = sessions
        self.reads = reads
        self.bus = bus
        self.instances = instances
        self._lines: dict[str, _Line] = {}
        self._lines_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reconcile_lock = threading.Lock()
        self.min_lease = min_lease
        self.leadership = leadership  # None: this process is the only one

    # -- pools -------------------------------------------------------------------------------------
    def create(self, ctx: RequestContext, spec: PoolSpec) -> Pool:
        ctx.require("pool:create")
        template = self._validated_template(spec)
        with transaction(self.sessions) as s:
            pool = Pool(workspace_id=ctx.workspace_id, name=spec.name, template=template)
            _set_settings(pool, spec)
            insert_unique(s, pool, f"a pool named {spec.name!r} exists")
            s.flush()
            s.expunge(pool)
        self._publish(pool.workspace_id, pool.id, pool.name)
        return pool

    def update(self, ctx: RequestContext, ref: str, spec: PoolSpec) -> Pool:
        """Give a pool a new template and settings (its name too). VMs made from now on follow
        the template; those it holds now keep theirs until they are checked in and reset. A
        smaller ``max_size`` retires ready VMs above it (the controller's next round)."""
        ctx.require("pool:edit")
        template = self._validated_template(spec)
        with transaction(self.sessions) as s:
            pool = self.get(s, ctx, ref)
            if spec.name != pool.name and s.scalar(
                select(Pool.id).where(Pool.workspace_id == ctx.workspace_id, Pool.name == spec.name)
            ):
                raise Conflict(f"a pool named {spec.name!r} exists", code="name_taken")
            pool.name, pool.template = spec.name, template
            _set_settings(pool, spec)
            s.flush()
            s.expunge(pool)
        self._publish(pool.workspace_id, pool.id, pool.name)
        return pool

    def _validated_template(self, spec: PoolSpec) -> dict[str, Any]:
        """Check a spec's name, settings and template; the template as stored."""
        check_name(spec.name, what="pool name")
        if spec.on_checkin not in ON_CHECKIN:
            raise Invalid(f"on_checkin must be one of {', '.join(ON_CHECKIN)}", code="invalid_pool")
        if not 0 <= spec.min_ready <= spec.max_size or not 1 <= spec.max_size <= 1000:
            raise Invalid("need 0 <= min_ready <= max_size and 1 <= max_size <= 1000", code="invalid_pool")
        if not self.min_lease <= spec.lease_default <= spec.lease_max <= 365 * 86400:
            raise Invalid(
                f"need {self.min_lease} s <= lease_default <= lease_max <= one year", code="invalid_pool"
            )
        if spec.idle_timeout is not None and spec.idle_timeout < 60:
            raise Invalid("idle_timeout is at least 60 s", code="invalid_pool")
        keys = [check_ssh_key(k) for k in spec.ssh_keys]
        if spec.user_data is not None:
            check_user_data(spec.user_data)
        return {
            "image": spec.image,
            "cpus": spec.cpus,
            "memory": spec.memory,
            "disk": spec.disk,
            "network": spec.network,
            "ssh_keys": keys,
            "user_data": spec.user_data,
            "ssh_user": spec.ssh_user,
            "probe_port": spec.probe_port,
        }

    def get(self, session: Session, ctx: RequestContext, ref: str) -> Pool:
        return lookup(session, Pool, ctx.workspace_id, ref, "pool")

    def all(self, session: Session, ctx: RequestContext) -> list[Pool]:
        return list(
            session.scalars(select(Pool).where(Pool.workspace_id == ctx.workspace_id).order_by(Pool.name))
        )

    def members(self, session: Session, pool_id: str) -> list[tuple[PoolMember, Instance | None]]:
        """The pool's VMs with their instances (None once an instance is gone), oldest first."""
        rows = session.execute(
            select(PoolMember, Instance)
            .outerjoin(Instance, Instance.id == PoolMember.instance_id)
            .where(PoolMember.pool_id == pool_id)
            .order_by(PoolMember.created_at)
        ).all()
        return [(m, i) for m, i in rows]

    def vms_of(self, session: Session, pool_ids: list[str]) -> dict[str, list[PoolMember]]:
        """The VMs of several pools, oldest first, in one query (for listings)."""
        found: dict[str, list[PoolMember]] = {pool_id: [] for pool_id in pool_ids}
        rows = session.scalars(
            select(PoolMember).where(PoolMember.pool_id.in_(pool_ids)).order_by(PoolMember.created_at)
        )
        for member in rows:
            found[member.pool_id].append(member)
        return found

    def delete(self, ctx: RequestContext, ref: str) -> None:
        ctx.require("pool:delete")
        with transaction(self.sessions) as s:
            pool = self.get(s, ctx, ref)
            held = s.scalar(
                select(func.count()).where(PoolMember.pool_id == pool.id, PoolMember.status == "checked-out")
            )
            if held:
                raise Conflict(f"pool {pool.name!r} has {held} VM(s) checked out", code="pool_in_use")
            members = list(s.scalars(select(PoolMember).where(PoolMember.pool_id == pool.id)))
            pool.min_ready, pool.max_size = 0, 0  # the controller stops refilling while VMs go
        for m in members:
            self._destroy(ctx_for(pool.workspace_id), m.instance_id)
        with transaction(self.sessions) as s:
            for m in s.scalars(select(PoolMember).where(PoolMember.pool_id == pool.id)):
                s.delete(m)
            for lease in s.scalars(select(PoolLease).where(PoolLease.pool_id == pool.id)):
                s.delete(lease)
            row = s.get(Pool, pool.id)
            if row is not None:
                s.delete(row)

    # -- checkout / checkin ------------------------------------------------------------------------
    def checkout(self, ctx: RequestContext, ref: str, lease: int | None = None) -> Checkout:
        """Hand the caller one available VM now; 409 ``pool_exhausted`` when none is."""
        terms = self._checkout_terms(ctx, ref, lease)
        got = self._try_checkout(ctx, *terms)
        if got is None:
            raise self._exhausted(terms[0])
        return got

    async def checkout_waiting(
        self, ctx: RequestContext, ref: str, lease: int | None = None, wait: float = 0
    ) -> Checkout:
        """As ``checkout``, but queue up to ``wait`` seconds, first come first served, when no VM
        is available (call on the event loop; the database work runs in worker threads)."""
        terms = await to_thread.run_sync(self._checkout_terms, ctx, ref, lease)
        line = self._line(terms[0])
        if wait <= 0 or line.empty():  # nobody waits before this caller: no need to queue
            got = await to_thread.run_sync(self._try_checkout, ctx, *terms)
            if got is not None:
                return got
            if wait <= 0:
                raise await to_thread.run_sync(self._exhausted, terms[0])
        deadline = line.loop.time() + wait
        ticket = line.take()
        try:
            while line.loop.time() < deadline:
                if line.serving == ticket:
                    got = await to_thread.run_sync(self._try_checkout, ctx, *terms)
                    if got is not None:
                        return got
                await line.sleep(deadline - line.loop.time())
            raise await to_thread.run_sync(self._exhausted, terms[0])
        finally:
            line.leave(ticket)

    def _checkout_terms(self, ctx: RequestContext, ref: str, lease: int | None) -> tuple[str, int, str]:
        """(pool id, lease seconds, SSH user) of a checkout, checked."""
        ctx.require("pool:edit")
        pool_id, _, lease_default, lease_max, template = self._pool_terms(
            ctx, ref, Pool.lease_default, Pool.lease_max, Pool.template
        )
        seconds = lease or lease_default
        if not self.min_lease <= seconds <= lease_max:
            raise Invalid(f"lease must be {self.min_lease} to {lease_max} seconds", code="invalid_lease")
        return pool_id, seconds, str(template.get("ssh_user") or "root")

    def _line(self, pool_id: str) -> _Line:
        """The pool's line on the running event loop."""
        loop = asyncio.get_running_loop()
        with self._lines_lock:
            line = self._lines.get(pool_id)
            if line is None or line.loop is not loop:
                line = self._lines[pool_id] = _Line(loop)
            return line

    def _wake(self, pool_id: str) -> None:
        """A VM came back: wake the pool's line (from any thread)."""
        with self._lines_lock:
            line = self._lines.get(pool_id)
        if line is not None and not line.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                line.loop.call_soon_threadsafe(line.notify)

    def _try_checkout(
        self, ctx: RequestContext, pool_id: str, seconds: int, ssh_user: str
    ) -> Checkout | None:
        """One statement claims the longest-idle available VM: an UPDATE of the row a sub-select
        picks (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent checkouts take different
        rows; SQLite has one writer at a time). Its RETURNING gives the VM; no row: None."""
        now = utcnow()
        expires = now + timedelta(seconds=seconds)
        pick = (
            select(PoolMember.id)
            .where(PoolMember.pool_id == pool_id, PoolMember.status == "available")
            .order_by(PoolMember.idle_since)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with transaction(self.sessions) as s:
            quotas.claim(s, ctx.workspace_id, pool_checkouts=1)
            got = s.execute(
                update(PoolMember)
                .where(PoolMember.id == pick, PoolMember.status == "available")
                .values(
                    status="checked-out",
                    holder_user_id=ctx.user_id,
                    holder=ctx.principal,
                    checked_out_at=now,
                    lease_expires_at=expires,
                    warned=False,
                )
                .returning(PoolMember.instance_id, PoolMember.name, PoolMember.ip)
                .execution_options(synchronize_session=False)
            ).first()
            if got is not None:
                instance_id, name, ip = got
                # stamped after the claim, so never before the last holder's check-in (the history
                # shows one VM's leases end to end)
                s.execute(
                    insert(PoolLease).values(
                        id=new_id(),
                        pool_id=pool_id,
                        instance_id=instance_id,
                        instance_name=name or instance_id,
                        ip=ip,
                        holder_user_id=ctx.user_id,
                        holder=ctx.principal,
                        started_at=utcnow(),
                        expires_at=expires,
                    )
                )
        if got is None:
            return None
        self._publish_member(ctx.workspace_id, pool_id, instance_id, "checked-out")
        return Checkout(instance_id, name or instance_id, ip, ssh_user, expires)

    def _exhausted(self, pool_id: str) -> PoolExhausted:
        with self.reads() as s:
            counts = dict(
                s.execute(
                    select(PoolMember.status, func.count())
                    .where(PoolMember.pool_id == pool_id)
                    .group_by(PoolMember.status)
                ).all()
            )
            soonest = s.scalar(
                select(func.min(PoolMember.lease_expires_at)).where(
                    PoolMember.pool_id == pool_id, PoolMember.status == "checked-out"
                )
            )
        if counts.get("provisioning") or counts.get("resetting"):
            retry = BOOT_ESTIMATE
        elif soonest is not None:
            retry = max(1, int((soonest - utcnow()).total_seconds()))
        else:
            retry = 60
        return PoolExhausted("No VMs currently available, please try after some time", retry_after=retry)

    def member(self, session: Session, pool_id: str, instance_id: str, ip: str | None = None) -> PoolMember:
        """The pool's VM ``instance_id`` (with address ``ip`` when given: both must name it)."""
        query = select(PoolMember).where(PoolMember.pool_id == pool_id, PoolMember.instance_id == instance_id)
        found = session.scalar(query if ip is None else query.where(PoolMember.ip == ip))
        if found is None:
            raise NotFound(VM_NOT_FOUND, code="vm_not_found")
        return found

    def _find_member(self, s: Session, pool_id: str, vm: str, *, lock: bool = False) -> PoolMember:
        """A pool's VM by instance id, name or IP address (``lock``: FOR UPDATE, so concurrent
        changes of one VM go one after the other)."""
        query = select(PoolMember).where(
            PoolMember.pool_id == pool_id,
            or_(PoolMember.instance_id == vm, PoolMember.name == vm, PoolMember.ip == vm),
        )
        member = s.scalar(query.with_for_update() if lock else query)
        if member is None:
            raise NotFound(VM_NOT_FOUND, code="vm_not_found")
        return member

    def _held(
        self, s: Session, ctx: RequestContext, pool_id: str, vm: str, verb: str, *, anyone: bool = False
    ) -> PoolMember:
        """A checked-out VM of the pool, locked, that the caller holds or, as a workspace admin,
        may act on (``anyone``: the controller ending a lease)."""
        member = self._find_member(s, pool_id, vm, lock=True)
        if member.status != "checked-out":
            raise Conflict(f"this VM is {member.status}, not checked out", code="not_checked_out")
        mine = member.holder_user_id == ctx.user_id if ctx.user_id else member.holder == ctx.principal
        if not (mine or anyone or ctx.can("member:edit")):
            raise Forbidden(f"only its holder or a workspace admin {verb}", code="permission_denied")
        return member

    def checkin(self, ctx: RequestContext, ref: str, vm: str, *, reason: str = "returned") -> None:
        """Give a VM back (its holder, or a workspace admin); what happens next is the pool's
        ``on_checkin``. 404 for a VM the pool does not have, 409 for one not checked out."""
        pool_id, ws, on_checkin = self._pool_terms(ctx, ref, Pool.on_checkin)
        status = "available" if on_checkin == "reuse" else "resetting"
        with transaction(self.sessions) as s:
            member = self._held(s, ctx, pool_id, vm, "checks a VM in", anyone=reason != "returned")
            self._end_lease(s, member.instance_id, reason)
            s.execute(
                update(PoolMember)
                .where(PoolMember.id == member.id)
                .values(
                    status=status,
                    holder_user_id=None,
                    holder=None,
                    checked_out_at=None,
                    lease_expires_at=None,
                    idle_since=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            instance_id = member.instance_id
        self._publish_member(ws, pool_id, instance_id, status)
        if status == "available":
            self._wake(pool_id)
        else:
            self._destroy(ctx_for(ws), instance_id)

    def _pool_terms(self, ctx: RequestContext, ref: str, *columns: Any) -> tuple[Any, ...]:
        """(id, workspace id, *columns) of the workspace's pool ``ref`` (id or name), read without
        loading the whole row: check-outs and check-ins do this on every call."""
        by = Pool.id if is_uuid(ref) else Pool.name
        with self.reads() as s:
            row = s.execute(
                select(Pool.id, Pool.workspace_id, *columns).where(
                    Pool.workspace_id == ctx.workspace_id, by == ref
                )
            ).first()
        if row is None:
            raise NotFound(f"pool {ref!r} not found", code="pool_not_found")
        return tuple(row)

    def extend(self, ctx: RequestContext, ref: str, vm: str, seconds: int) -> Any:
        """Push a lease's end out, up to the pool's lease_max from its checkout."""
        with transaction(self.sessions) as s:
            pool = self.get(s, ctx, ref)
            member = self._held(s, ctx, pool.id, vm, "extends a lease")
            assert member.checked_out_at is not None
            wanted = utcnow() + timedelta(seconds=seconds)
            limit = member.checked_out_at + timedelta(seconds=pool.lease_max)
            if seconds <= 0 or wanted > limit:
                raise Invalid(
                    f"a lease of this pool ends at most {pool.lease_max} s after checkout",
                    code="invalid_lease",
                )
            member.lease_expires_at, member.warned = wanted, False
            lease = s.scalar(
                select(PoolLease).where(
                    PoolLease.instance_id == member.instance_id, PoolLease.ended_at.is_(None)
                )
            )
            if lease is not None:
                lease.expires_at = wanted
            return wanted

    def _end_lease(self, s: Session, instance_id: str, reason: str) -> None:
        s.execute(
            update(PoolLease)
            .where(PoolLease.instance_id == instance_id, PoolLease.ended_at.is_(None))
            .values(ended_at=utcnow(), end_reason=reason)
            .execution_options(synchronize_session=False)
        )

    def leases(self, session: Session, ctx: RequestContext, *, pool_id: str | None = None, mine: bool = False,
               current: bool = False, limit: int = 100) -> list[PoolLease]:  # fmt: skip
        q = (
            select(PoolLease)
            .join(Pool, Pool.id == PoolLease.pool_id)
            .where(Pool.workspace_id == ctx.workspace_id)
        )
        if pool_id:
            q = q.where(PoolLease.pool_id == pool_id)
        if mine:
            q = (
                q.where(PoolLease.holder_user_id == ctx.user_id)
                if ctx.user_id
                else q.where(PoolLease.holder == ctx.principal)
            )
        if current:
            q = q.where(PoolLease.ended_at.is_(None))
        return list(session.scalars(q.order_by(PoolLease.started_at.desc()).limit(limit)))

    # -- admin ---------------------------------------------------------------------------------------
    def add_vms(self, ctx: RequestContext, ref: str, count: int) -> list[str]:
        """Grow the pool now by ``count`` VMs; 409 "Maximum VM Count reached" past max_size. The
        places are claimed first, all or none, in one transaction (``_claim``), so parallel adds,
        here or on another replica, never pass max_size between them."""
        ctx.require("pool:create")
        with self.reads() as s:
            pool = self.get(s, ctx, ref)
        claims = self._claim(pool, count) if count >= 1 else []
        if not claims:
            raise Conflict("Maximum VM Count reached", code="max_vms_reached", max_size=pool.max_size)
        made: list[str] = []
        try:
            for claim in claims:
                made.append(self._provision(pool, claim))
        except BaseException:
            self._release(claims[len(made) + 1 :])  # the failed one freed its own place
            raise
        return made

    def remove_vm(self, ctx: RequestContext, ref: str, vm: str) -> None:
        """Delete one VM of the pool: only an available one or one in error."""
        ctx.require("pool:delete")
        with transaction(self.sessions) as s:
            pool = self.get(s, ctx, ref)
            member = self._find_member(s, pool.id, vm, lock=True)
            if member.status not in ("available", "error"):
                raise Conflict(
                    f"this VM is {member.status}: only available or failed VMs are deleted", code="vm_busy"
                )
            member.status = "resetting"  # on its way out; the controller forgets it once gone
            instance_id = member.instance_id
            # keep the pool at this size until the admin says otherwise
            if pool.min_ready > 0:
                live = s.scalar(select(func.count()).where(PoolMember.pool_id == pool.id)) or 0
                pool.min_ready = min(pool.min_ready, max(live - 1, 0))
        self._destroy(ctx_for(pool.workspace_id), instance_id)

    # -- the controller ------------------------------------------------------------------------------
    def _claim(self, pool: Pool, count: int) -> list[tuple[str, str]]:
        """Take ``count`` places in the pool, all or none: ([], nothing taken) when the pool
        would pass max_size. One transaction locks the pool's row (FOR UPDATE: PostgreSQL makes
        every other claim on this pool, from any replica, wait for the commit; SQLite's write
        transactions are one at a time anyway), counts the pool's VMs and inserts a row per
        place. A place's row holds a provisional instance id until ``_provision`` has made the
        VM; the controller leaves such rows alone for ``CLAIM_GRACE``. (member id, VM name) each."""
        now = utcnow()
        with transaction(self.sessions) as s:
            max_size = s.scalar(select(Pool.max_size).where(Pool.id == pool.id).with_for_update())
            if max_size is None:
                raise NotFound(f"pool {pool.name!r} not found", code="pool_not_found")
            size = s.scalar(select(func.count()).where(PoolMember.pool_id == pool.id)) or 0
            if size + count > max_size:
                return []
            claims = [(new_id(), f"{pool.name[:50]}-{secrets.token_hex(4)}") for _ in range(count)]
            s.execute(
                insert(PoolMember),
                [
                    {
                        "id": member_id,
                        "pool_id": pool.id,
                        "instance_id": new_id(),  # provisional: the VM's own id once it exists
                        "name": name,
                        "status": "provisioning",
                        "idle_since": now,
                        "created_at": now,
                    }
                    for member_id, name in claims
                ],
            )
        return claims

    def _release(self, claims: list[tuple[str, str]]) -> None:
        """Give back places claimed for VMs that were not made."""
        with transaction(self.sessions) as s:
            s.execute(
                delete(PoolMember)
                .where(PoolMember.id.in_([member_id for member_id, _ in claims]))
                .execution_options(synchronize_session=False)
            )

    def _provision(self, pool: Pool, claim: tuple[str, str]) -> str:
        """Start one VM from the template in a place ``_claim`` took; the controller marks it
        available once it answers. A VM that cannot be made frees its place (the caller's job
        for the places after it)."""
        member_id, name = claim
        t = pool.template
        ctx = ctx_for(pool.workspace_id)
        req = CreateRequest(
            name=name,
            image=t["image"],
            cpus=t.get("cpus", 1),
            memory=t.get("memory", 512),
            disk=t.get("disk", 1),
            network=t.get("network", "default"),
            ssh_keys=tuple(t.get("ssh_keys") or ()),
            user_data=t.get("user_data"),
        )
        try:
            instance_id, _ = self.instances.create(ctx, req)
        except BaseException:
            self._release([claim])
            raise
        with transaction(self.sessions) as s:
            nics = instance_nics(s, [instance_id]).get(instance_id)
            ip = nics[0][0].address if nics else None
            enrolled = s.execute(
                update(PoolMember)
                .where(PoolMember.id == member_id)
                .values(instance_id=instance_id, ip=ip)
                .returning(PoolMember.id)
                .execution_options(synchronize_session=False)
            ).first()
        if enrolled is None:  # the pool (or this place) went meanwhile: so does the VM
            self._destroy(ctx, instance_id)
            raise NotFound(f"pool {pool.name!r} not found", code="pool_not_found")
        self._publish_member(pool.workspace_id, pool.id, instance_id, "provisioning")
        return instance_id

    def _destroy(self, ctx: RequestContext, instance_id: str) -> None:
        try:
            self.instances.action(ctx, instance_id, "delete", force=True)
        except NotFound:
            pass
        except CloudletError as err:  # busy now: the controller tries again
            log.info("pool VM %s not deleted yet: %s", instance_id, err.detail)

    def reconcile(self) -> None:
        """One pass of the controller over every pool: one pass at a time in this process, and in
        one replica at a time (the one holding the "pools" leader lock)."""
        with self._reconcile_lock:
            if self.leadership is None or self.leadership.hold(LEADER_LOCK):
                self._reconcile_all()

    def _reconcile_all(self) -> None:
        with self.reads() as s:
            pools = list(s.scalars(select(Pool)))
            for p in pools:
                s.expunge(p)
        for pool in pools:
            try:
                self._reconcile_pool(pool)
            except CloudletError as err:
                log.warning("pool %s: %s", pool.name, err.detail)

    def _reachable(self, pool: Pool) -> set[str]:
        """Ids of the pool's booting VMs that run and answer on their address (probed in parallel,
        outside any transaction). With no probe port, running is enough."""
        with self.reads() as s:
            booted = [
                (m.instance_id, m.ip)
                for m, inst in self.members(s, pool.id)
                if m.status == "provisioning" and inst is not None and inst.state == "running"
            ]
        port = pool.template.get("probe_port", 22)
        if not booted or port is None:
            return {instance_id for instance_id, _ in booted}
        driver = self.instances.compute

        def probe(vm: tuple[str, str | None]) -> bool:
            return vm[1] is not None and driver.reachable(vm[0], vm[1], int(port), PROBE_TIMEOUT)

        with ThreadPoolExecutor(min(len(booted), 16)) as probes:
            answers = list(probes.map(probe, booted))
        return {vm[0] for vm, ok in zip(booted, answers, strict=True) if ok}

    def _reconcile_pool(self, pool: Pool) -> None:
        ctx = ctx_for(pool.workspace_id)
        reachable = self._reachable(pool)
        now = utcnow()
        to_destroy: list[str] = []
        expired: list[str] = []
        became_available = False
        with transaction(self.sessions) as s:
            members = self.members(s, pool.id)
            before = {m.instance_id: m.status for m, _ in members}
            for member, inst in members:
                state = inst.state if inst is not None else None
                if member.status == "provisioning":
                    if inst is None and now - member.created_at < CLAIM_GRACE:
                        continue  # a place just claimed: its VM is being made (``_claim``)
                    if member.instance_id in reachable and state == "running":
                        member.status, member.idle_since, became_available = "available", now, True
                    elif state in (None, "error") or now - member.created_at > BOOT_TIMEOUT:
                        member.status = "error"
                elif member.status == "resetting" and inst is None:
                    s.delete(member)  # the old VM is gone: a fresh one takes its place below
                elif member.status == "available" and state != "running":
                    member.status = "error"
                elif member.status == "checked-out" and member.lease_expires_at is not None:
                    if member.lease_expires_at <= now:
                        expired.append(member.instance_id)
                    elif not member.warned and member.lease_expires_at - now <= WARN_BEFORE:
                        member.warned = True
                        payload = {
                            "pool": pool.name,
                            "instance_id": member.instance_id,
                            "holder": member.holder,
                            "expires_at": member.lease_expires_at.isoformat(),
                        }
                        self.bus.publish(Event("pool.lease_expiring", pool.workspace_id, payload))
                if member.status == "error":
                    member.status = "resetting"
                    to_destroy.append(member.instance_id)
            s.flush()
            counts = dict(
                s.execute(
                    select(PoolMember.status, func.count())
                    .where(PoolMember.pool_id == pool.id)
                    .group_by(PoolMember.status)
                ).all()
            )
            # Ready VMs go, oldest idle first: those above a lowered max_size (checked-out ones
            # stay), and idle ones above min_ready once they waited idle_timeout.
            excess = sum(n for status, n in counts.items() if status != "resetting") - pool.max_size
            spare = counts.get("available", 0) + counts.get("provisioning", 0) - pool.min_ready
            idle_before = now - timedelta(seconds=pool.idle_timeout or 0)
            for member in s.scalars(
                select(PoolMember)
                .where(PoolMember.pool_id == pool.id, PoolMember.status == "available")
                .order_by(PoolMember.idle_since)
            ):
                idle = pool.idle_timeout is not None and spare > 0 and member.idle_since <= idle_before
                if excess <= 0 and not idle:
                    break
                member.status = "resetting"
                to_destroy.append(member.instance_id)
                excess -= 1
                spare -= 1
            after = {m.instance_id: m.status for m, _ in members}  # the session's same objects
        # Pages showing the pool hear of each VM that became ready or went to be replaced.
        for instance_id, status in after.items():
            if before.get(instance_id) != status:
                self._publish_member(pool.workspace_id, pool.id, instance_id, status)
        for instance_id in expired:
            try:
                self.checkin(ctx, pool.id, instance_id, reason="expired")
            except CloudletError as err:
                log.warning("ending the lease of %s failed: %s", instance_id, err.detail)
        for instance_id in to_destroy:
            self._destroy(ctx, instance_id)
        with self.reads() as s:
            total = s.scalar(select(func.count()).where(PoolMember.pool_id == pool.id)) or 0
            ready = s.scalar(
                select(func.count()).where(
                    PoolMember.pool_id == pool.id, PoolMember.status.in_(["available", "provisioning"])
                )
            ) or 0  # fmt: skip
        for _ in range(max(0, min(pool.min_ready - ready, pool.max_size - total))):
            claims = self._claim(pool, 1)
            if not claims:  # an add took the last places meanwhile
                break
            try:
                self._provision(pool, claims[0])
            except CloudletError as err:
                log.warning("pool %s cannot grow: %s", pool.name, err.detail)
                break
        if became_available:
            self._wake(pool.id)

    def start(self, interval: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.reconcile()
                except Exception:
                    log.exception("pool controller pass failed")

        self._thread = threading.Thread(target=loop, name="pools", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.leadership is not None:
            with contextlib.suppress(Exception):  # shutting down: the lock lapses anyway
                self.leadership.release(LEADER_LOCK)

    # -- events --------------------------------------------------------------------------------------
    def _publish(self, workspace_id: str, pool_id: str, name: str) -> None:
        self.bus.publish(Event("pool.updated", workspace_id, {"id": pool_id, "name": name}))

    def _publish_member(self, workspace_id: str, pool_id: str, instance_id: str, status: str) -> None:
        self.bus.publish(
            Event("pool.vm", workspace_id, {"pool_id": pool_id, "instance_id": instance_id, "status": status})
        )


def _set_settings(pool: Pool, spec: PoolSpec) -> None:
    pool.min_ready, pool.max_size = spec.min_ready, spec.max_size
    pool.lease_default, pool.lease_max = spec.lease_default, spec.lease_max
    pool.on_checkin, pool.idle_timeout, pool.legacy_api = spec.on_checkin, spec.idle_timeout, spec.legacy_api


def ctx_for(workspace_id: str) -> RequestContext:
    """The controller acts for the pool's workspace."""
    return RequestContext(principal="pool-controller", workspace_id=workspace_id)
