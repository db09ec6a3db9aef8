"""Volumes: extra disks of a workspace, made in a storage pool, attached to at most one VM at a time.

Sizes count against the workspace's ``disk_gb`` quota, claimed in the transaction that records
them. Every change is an operation; while one runs the volume's ``status`` is not ``ready``, which
is what the next change's conditional update checks, so two changes never overlap. Attaching and
detaching also hold the VM's lock, like every other action on it. The backend names a volume by
its id: user-chosen names never reach libvirt.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cloudlet.db.models import Instance, Operation, Snapshot, StoragePool, Volume
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.drivers.base import StorageDriver
from cloudlet.errors import CloudletError, Conflict, InUse, Invalid, NotFound
from cloudlet.services import quotas
from cloudlet.services.context import RequestContext
from cloudlet.services.instances import MAX_DISK_GB, Instances, lookup_ref
from cloudlet.services.lifecycle import State
from cloudlet.services.names import check_name, insert_unique, lookup
from cloudlet.services.operations import OperationContext, Operations, OpStatus
from cloudlet.services.storage_pools import StoragePools

log = logging.getLogger(__name__)
GIB = 1024**3
# vda is the system disk, vdb the cloud-init seed: volumes take the rest of the virtio letters.
TARGETS = tuple(f"vd{chr(c)}" for c in range(ord("c"), ord("z") + 1))
ATTACHABLE = (State.RUNNING, State.STOPPED)


def check_volume_size(size_gb: int) -> None:
    if not 1 <= size_gb <= MAX_DISK_GB:
        raise Invalid(f"size must be between 1 and {MAX_DISK_GB} GiB", code="invalid_size")


class Volumes:
    def __init__(
        self, sessions: SessionFactory, ops: Operations, pools: StoragePools, instances: Instances
    ) -> None:
        self.sessions = sessions
        self.ops = ops
        self.pools = pools
        self.instances = instances

    def driver(self) -> StorageDriver:
        return self.pools.driver()

    # -- reading ---------------------------------------------------------------------------------
    @staticmethod
    def get(session: Session, ctx: RequestContext, ref: str) -> Volume:
        return lookup(session, Volume, ctx.workspace_id, ref, "volume")

    @staticmethod
    def all(session: Session, ctx: RequestContext) -> list[Volume]:
        return list(
            session.scalars(
                select(Volume).where(Volume.workspace_id == ctx.workspace_id).order_by(Volume.created_at)
            )
        )

    def allocation(self, pool: StoragePool, volume: Volume) -> int | None:
        """Bytes the volume takes in its pool now; None when the backend cannot tell."""
        driver = self.pools.backend
        if volume.status == "creating" or driver is None:
            return None
        try:
            return driver.volume_usage(pool.backend_name, volume.id).allocation
        except CloudletError:  # a listing still shows the volume when the backend is away
            return None

    # -- create, resize, delete ------------------------------------------------------------------
    def create(
        self, ctx: RequestContext, name: str, size_gb: int, pool_ref: str | None = None
    ) -> tuple[str, str]:
        """Claim the name and the quota, then make the volume in an operation; returns
        (volume id, operation id)."""
        ctx.require("instance:create")
        check_name(name, what="volume name")
        check_volume_size(size_gb)
        driver = self.driver()
        with transaction(self.sessions) as s:
            pool = self._usable_pool(s, pool_ref)
            quotas.claim(s, ctx.workspace_id, disk_gb=size_gb)
            row = Volume(workspace_id=ctx.workspace_id, name=name, pool_id=pool.id, size_gb=size_gb)
            insert_unique(s, row, f"a volume named {name!r} exists")
            op = self.ops.record(s, ctx, "volume.create", "volume", row.id)
            volume_id, backend = row.id, pool.backend_name

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.on_undo("forget the volume", lambda: self._forget(volume_id))
            octx.progress(20, "creating the volume")
            octx.retry(lambda: driver.create_volume(backend, volume_id, size_gb * GIB))
            octx.on_undo("delete the backend volume", lambda: driver.delete_volume(backend, volume_id))
            self._set(volume_id, status="ready")
            return {"volume_id": volume_id, "name": name, "size": size_gb}

        self.ops.launch(op, step)
        return volume_id, op.id

    def _usable_pool(self, session: Session, ref: str | None) -> StoragePool:
        """The named pool (422 when unknown: it is named in the body), or the default one; locked
        so that it cannot start being deleted under the new volume."""
        if ref is None:
            query = select(StoragePool).where(StoragePool.is_default.is_(True))
        else:
            try:
                found = self.pools.get(session, ref)
            except NotFound as err:
                raise Invalid(err.detail, code="unknown_storage_pool") from None
            query = select(StoragePool).where(StoragePool.id == found.id)
        pool = session.scalar(query.with_for_update())
        if pool is None:
            raise Conflict("there is no default storage pool on this server", code="storage_pool_not_ready")
        if pool.status != "active":
            raise Conflict(f"storage pool {pool.name!r} is {pool.status}", code="storage_pool_not_ready")
        return pool

    def resize(self, ctx: RequestContext, ref: str, size_gb: int) -> str:
        """Grow a volume; attached to a running VM, the guest sees the new size at once. The
        growth is claimed against the quota in the transaction that records the new size."""
        ctx.require("instance:edit")
        check_volume_size(size_gb)
        driver = self.driver()
        with transaction(self.sessions) as s:
            row = self.get(s, ctx, ref)
            if size_gb < row.size_gb:
                raise Invalid(f"volumes only grow: {row.name!r} has {row.size_gb} GiB", code="disk_shrink")
            if size_gb == row.size_gb:
                raise Invalid(f"volume {row.name!r} already has {size_gb} GiB", code="same_size")
            quotas.claim(s, ctx.workspace_id, disk_gb=size_gb - row.size_gb)
            vm = s.get(Instance, row.instance_id) if row.instance_id else None
            self._hold(s, row, "resizing")
            old, target = row.size_gb, row.target or ""
            row.size_gb = size_gb
            if vm is not None:
                self._check_vm_state(vm)
                op = self.instances.locked_operation(s, ctx, vm, "volume.resize", vm.state)
            else:
                op = self.ops.record(s, ctx, "volume.resize", "volume", row.id)
            volume_id, backend = row.id, self._backend(s, row)
            vm_id = vm.id if vm is not None else None

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.on_undo("restore the recorded size", lambda: self._set(volume_id, size_gb=old))
            octx.retry(
                lambda: driver.resize_volume(
                    backend, volume_id, size_gb * GIB, instance_id=vm_id, target=target
                )
            )
            return {"volume_id": volume_id, "size": size_gb}

        def done() -> None:
            self._set(volume_id, status="ready")
            if vm_id is not None:
                self.instances.unlock(vm_id)

        self.ops.launch(op, step, finally_=done)
        return op.id

    def delete(self, ctx: RequestContext, ref: str) -> str:
        """Delete a detached volume and its data (409 volume_in_use while it is attached)."""
        ctx.require("instance:delete")
        driver = self.driver()
        with transaction(self.sessions) as s:
            row = self.get(s, ctx, ref)
            self._hold(s, row, "deleting")
            op = self.ops.record(s, ctx, "volume.delete", "volume", row.id)
            volume_id, backend = row.id, self._backend(s, row)

        def step(octx: OperationContext) -> None:
            try:
                octx.retry(lambda: driver.delete_volume(backend, volume_id))
            except Exception:
                self._set(volume_id, status="ready")
                raise
            self._forget(volume_id)

        self.ops.launch(op, step)
        return op.id

    # -- attach, detach --------------------------------------------------------------------------
    def attach(self, ctx: RequestContext, vm_ref: str, volume_ref: str) -> str:
        """Attach a ready, detached volume to a VM as its next free disk (vdc, vdd...): hot-plugged
        while it runs, in its definition while it is stopped. A volume is never on two VMs: the
        claim is one conditional update, so of two concurrent attaches exactly one wins."""
        ctx.require("instance:edit")
        driver = self.driver()
        with transaction(self.sessions) as s:
            vm = self._vm(s, ctx, vm_ref)
            row: Volume = lookup_ref(s, Volume, ctx, volume_ref, "volume")
            self._check_vm_state(vm)
            self._check_no_snapshots(s, vm)
            op = self.instances.locked_operation(s, ctx, vm, "volume.attach", vm.state)
            used = set(s.scalars(select(Volume.target).where(Volume.instance_id == vm.id)))
            target = next((t for t in TARGETS if t not in used), None)
            if target is None:
                raise Conflict(f"VM {vm.name!r} has no free disk slot left", code="no_free_target")
            self._hold(s, row, "attaching", instance_id=vm.id, target=target)
            vm_id, volume_id, backend = vm.id, row.id, self._backend(s, row)

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.on_undo("release the volume", lambda: self._set(volume_id, instance_id=None, target=None))
            octx.retry(lambda: driver.attach_volume(vm_id, backend, volume_id, target))
            return {"volume_id": volume_id, "instance_id": vm_id, "target": target}

        def done() -> None:
            self._set(volume_id, status="ready")
            self.instances.unlock(vm_id)

        self.ops.launch(op, step, finally_=done)
        return op.id

    def detach(self, ctx: RequestContext, vm_ref: str, volume_ref: str) -> str:
        """Take a volume off a VM (a running guest must let go of it); its data stays."""
        ctx.require("instance:edit")
        driver = self.driver()
        with transaction(self.sessions) as s:
            vm = self._vm(s, ctx, vm_ref)
            row = self.get(s, ctx, volume_ref)
            if row.instance_id != vm.id:
                raise Conflict(
                    f"volume {row.name!r} is not attached to {vm.name!r}", code="volume_not_attached"
                )
            self._check_vm_state(vm)
            self._check_no_snapshots(s, vm)
            op = self.instances.locked_operation(s, ctx, vm, "volume.detach", vm.state)
            self._hold(s, row, "detaching", instance_id=vm.id)
            vm_id, volume_id, target = vm.id, row.id, row.target or ""

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.retry(lambda: driver.detach_volume(vm_id, target))
            self._set(volume_id, instance_id=None, target=None)
            return {"volume_id": volume_id, "instance_id": vm_id}

        def done() -> None:
            self._set(volume_id, status="ready")
            self.instances.unlock(vm_id)

        self.ops.launch(op, step, finally_=done)
        return op.id

    # -- recovery --------------------------------------------------------------------------------
    def recover(self) -> int:
        """At start, after the reconciler failed the operations of dead processes: settle the
        volumes those operations left half-way (no live operation holds them any more). An
        interrupted create is rolled back, a delete or a detach finished, an attach undone, a
        resize settles at the size the backend has. Returns how many volumes were settled."""
        driver = self.pools.backend
        if driver is None:
            return 0
        with self.sessions() as s:
            busy = set(
                s.scalars(
                    select(Operation.target_id).where(
                        Operation.status.in_([OpStatus.PENDING, OpStatus.RUNNING])
                    )
                )
            )
            stuck = [
                (v.id, v.status, v.instance_id, v.target or "", self._backend(s, v))
                for v in s.scalars(select(Volume).where(Volume.status != "ready"))
                if v.id not in busy and (v.instance_id is None or v.instance_id not in busy)
            ]
        for volume_id, status, vm_id, target, backend in stuck:
            try:
                if status in ("creating", "deleting"):
                    driver.delete_volume(backend, volume_id)
                    self._forget(volume_id)
                    continue
                if status in ("attaching", "detaching") and vm_id is not None:
                    driver.detach_volume(vm_id, target)
                    self._set(volume_id, instance_id=None, target=None)
                elif status == "resizing":
                    capacity = driver.volume_usage(backend, volume_id).capacity
                    self._set(volume_id, size_gb=max(1, capacity // GIB))
                self._set(volume_id, status="ready")
            except CloudletError as err:
                log.error("recovering volume %s (%s) failed: %s", volume_id, status, err.detail)
                if status != "creating":  # usable again, where it is: the user can retry
                    self._set(volume_id, status="ready")
        return len(stuck)

    # -- helpers ---------------------------------------------------------------------------------
    def _vm(self, session: Session, ctx: RequestContext, ref: str) -> Instance:
        vm = self.instances.get(session, ctx, ref)
        if vm.kind != "vm":
            raise Invalid("volumes attach to VMs only; containers use named volumes", code="not_a_vm")
        return vm

    @staticmethod
    def _check_no_snapshots(session: Session, vm: Instance) -> None:
        """A VM snapshot records the VM's disks and reverting brings that set back; a volume
        attached or detached since would be put back or taken off behind cloudlet's back (and
        could end up on two VMs). So the set of volumes changes only while the VM has none."""
        count = session.scalar(select(func.count()).where(Snapshot.instance_id == vm.id)) or 0
        if count:
            raise Conflict(
                f"VM {vm.name!r} has {count} snapshot(s), which record its disks: delete them before "
                "attaching or detaching volumes",
                code="instance_has_snapshots",
            )

    @staticmethod
    def _check_vm_state(vm: Instance) -> None:
        if vm.state not in ATTACHABLE:
            raise Conflict(f"instance {vm.name!r} is {vm.state}", code="invalid_state")

    @staticmethod
    def _backend(session: Session, row: Volume) -> str:
        pool = session.get(StoragePool, row.pool_id)
        assert pool is not None  # a pool holding volumes is never deleted
        return pool.backend_name

    @staticmethod
    def _hold(session: Session, row: Volume, status: str, **claim: Any) -> None:
        """Move a ready volume to ``status`` in one conditional update (409 when it is not ready).
        Detaching asks that it is on that VM, a resize that it is still where it was, everything
        else that it is detached. ``claim`` are further values to set with the status."""
        query = update(Volume).where(Volume.id == row.id, Volume.status == "ready")
        if status == "detaching":
            query = query.where(Volume.instance_id == claim.pop("instance_id"))
        elif status == "resizing" and row.instance_id is not None:  # grown where it is attached
            query = query.where(Volume.instance_id == row.instance_id)
        else:  # attaching, deleting, resizing a detached volume: it must be detached
            query = query.where(Volume.instance_id.is_(None))
        done = session.execute(query.values(status=status, **claim)).rowcount  # type: ignore[attr-defined]
        if done == 1:
            session.refresh(row)
            return
        session.refresh(row)
        if row.instance_id is not None and status in ("attaching", "deleting"):
            vm_name = session.scalar(select(Instance.name).where(Instance.id == row.instance_id))
            raise InUse(
                f"volume {row.name!r} is attached to {vm_name!r}; detach it first",
                code="volume_in_use",
                attached_to=vm_name,
            )
        raise Conflict(f"volume {row.name!r} is {row.status}", code="volume_busy")

    def _set(self, volume_id: str, **values: Any) -> None:
        with transaction(self.sessions) as s:
            s.execute(update(Volume).where(Volume.id == volume_id).values(**values))

    def _forget(self, volume_id: str) -> None:
        with transaction(self.sessions) as s:
            row = s.get(Volume, volume_id)
            if row is not None:
                s.delete(row)
