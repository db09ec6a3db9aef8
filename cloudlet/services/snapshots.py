"""VM snapshots: create (the disk, plus the memory while the VM runs), list, revert, delete.

Each change is an operation holding the VM's lock, like every other action on it. The backend names
a snapshot by its cloudlet id, so user-chosen names never reach libvirt; a name is unique per VM.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudlet.db.models import Instance, Snapshot
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.errors import Conflict, Invalid, NotFound
from cloudlet.services.context import RequestContext
from cloudlet.services.instances import Instances
from cloudlet.services.lifecycle import State
from cloudlet.services.names import check_name, insert_unique, is_uuid
from cloudlet.services.operations import OperationContext

MAX_DESCRIPTION = 1024


def find_snapshot(session: Session, vm: Instance, ref: str) -> Snapshot:
    """A snapshot of ``vm`` by name or id (404 otherwise)."""
    by = Snapshot.id if is_uuid(ref) else Snapshot.name
    found = session.scalar(select(Snapshot).where(Snapshot.instance_id == vm.id, by == ref))
    if found is None:
        raise NotFound(f"snapshot {ref!r} not found", code="snapshot_not_found")
    return found


def ready_snapshot(session: Session, vm: Instance, ref: str) -> Snapshot:
    """As :func:`find_snapshot`, and 409 while the snapshot is being made or deleted."""
    snap = find_snapshot(session, vm, ref)
    if snap.status != "ready":
        raise Conflict(f"snapshot {snap.name!r} is {snap.status}", code="snapshot_busy")
    return snap


class Snapshots:
    def __init__(self, sessions: SessionFactory, instances: Instances) -> None:
        self.sessions = sessions
        self.instances = instances

    def _vm(self, session: Session, ctx: RequestContext, ref: str) -> Instance:
        return self.instances.get_vm(session, ctx, ref, "have snapshots")

    def list(self, session: Session, ctx: RequestContext, vm_ref: str) -> list[Snapshot]:
        vm = self._vm(session, ctx, vm_ref)
        return list(
            session.scalars(
                select(Snapshot).where(Snapshot.instance_id == vm.id).order_by(Snapshot.created_at)
            )
        )

    def create(self, ctx: RequestContext, vm_ref: str, name: str, description: str = "") -> str:
        """Snapshot a stopped or running VM (a running one keeps running; its memory is saved)."""
        ctx.require("instance:edit")
        check_name(name, what="snapshot name")
        if len(description) > MAX_DESCRIPTION:
            raise Invalid(f"description is limited to {MAX_DESCRIPTION} characters", code="invalid_snapshot")
        with transaction(self.sessions) as s:
            vm = self._vm(s, ctx, vm_ref)
            self._check_state(vm)
            snap = Snapshot(
                instance_id=vm.id,
                name=name,
                description=description or None,
                cpus=vm.cpus,
                memory_mb=vm.memory_mb,
                disk_gb=vm.disk_gb,
            )
            insert_unique(s, snap, f"VM {vm.name!r} has a snapshot named {name!r}")
            op = self.instances.locked_operation(s, ctx, vm, "snapshot.create", vm.state)
            vm_id, snap_id = vm.id, snap.id

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.on_undo("forget the snapshot", lambda: self._forget(snap_id))
            memory = octx.retry(
                lambda: self.instances.compute.create_snapshot(vm_id, snap_id, description=description)
            )
            with transaction(self.sessions) as s:
                row = s.get(Snapshot, snap_id)
                assert row is not None
                row.status, row.with_memory = "ready", bool(memory)
            return {"snapshot_id": snap_id, "name": name, "with_memory": bool(memory)}

        self.instances.ops.launch(op, step, finally_=lambda: self.instances.unlock(vm_id))
        return op.id

    def revert(self, ctx: RequestContext, vm_ref: str, snap_ref: str) -> str:
        """Return the VM to a snapshot: with memory it runs on from that moment; a disk-only
        snapshot leaves it stopped. What was written since is gone."""
        ctx.require("instance:edit")
        with transaction(self.sessions) as s:
            vm = self._vm(s, ctx, vm_ref)
            snap = ready_snapshot(s, vm, snap_ref)
            self._check_state(vm)
            op = self.instances.locked_operation(s, ctx, vm, "snapshot.revert", vm.state)
            vm_id, snap_id, name = vm.id, snap.id, snap.name

        def step(octx: OperationContext) -> dict[str, Any]:
            try:
                octx.retry(lambda: self.instances.compute.revert_snapshot(vm_id, snap_id))
                self._restore_sizes(vm_id, snap_id)
            finally:
                self.instances.resync_one(vm_id)
            return {"snapshot_id": snap_id, "name": name}

        self.instances.ops.launch(op, step, finally_=lambda: self.instances.unlock(vm_id))
        return op.id

    def delete(self, ctx: RequestContext, vm_ref: str, snap_ref: str) -> str:
        ctx.require("instance:edit")
        with transaction(self.sessions) as s:
            vm = self._vm(s, ctx, vm_ref)
            snap = ready_snapshot(s, vm, snap_ref)
            op = self.instances.locked_operation(s, ctx, vm, "snapshot.delete", vm.state)
            snap.status = "deleting"
            vm_id, snap_id = vm.id, snap.id

        def step(octx: OperationContext) -> None:
            try:
                octx.retry(lambda: self.instances.compute.delete_snapshot(vm_id, snap_id))
            except Exception:
                self._set_status(snap_id, "ready")
                raise
            self._forget(snap_id)

        self.instances.ops.launch(op, step, finally_=lambda: self.instances.unlock(vm_id))
        return op.id

    def _restore_sizes(self, vm_id: str, snap_id: str) -> None:
        """The VM is back at the snapshot's vCPUs, memory and disk size (qcow2 restores the
        disk's size, libvirt the definition): record them, or a disk grown since would still
        count as grown, and the next resize would start from a size the disk no longer has."""
        with transaction(self.sessions) as s:
            vm, snap = s.get(Instance, vm_id), s.get(Snapshot, snap_id)
            if vm is None or snap is None or snap.disk_gb is None:
                return  # taken before sizes were recorded
            vm.cpus = snap.cpus or vm.cpus
            vm.memory_mb = snap.memory_mb or vm.memory_mb
            vm.disk_gb = snap.disk_gb

    @staticmethod
    def _check_state(vm: Instance) -> None:
        if vm.state not in (State.RUNNING, State.STOPPED):
            raise Conflict(f"instance {vm.name!r} is {vm.state}", code="invalid_state")

    def _set_status(self, snap_id: str, status: str) -> None:
        with transaction(self.sessions) as s:
            row = s.get(Snapshot, snap_id)
            if row is not None:
                row.status = status

    def _forget(self, snap_id: str) -> None:
        with transaction(self.sessions) as s:
            row = s.get(Snapshot, snap_id)
            if row is not None:
                s.delete(row)
