"""VM clones: a new VM with a copy of another's disk, taken from the stopped VM or from one of its
snapshots (then the source may run on).

A linked clone keeps only what differs from the base image and stays backed by it, so it costs
what the source wrote, not the image; a full clone stands alone. Either way the clone is a VM like
any other: its own name, addresses (one on each of the source's networks), MACs, hostname and
NoCloud seed (a new instance id, so cloud-init in the guest runs its per-instance steps again),
counted against the quota like a create.

The clone operation holds both VMs' locks: the source is neither started, changed nor deleted
while its disk is read, and the new VM is not touched until it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudlet.db.models import Image, Instance
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.errors import Conflict
from cloudlet.services.context import RequestContext
from cloudlet.services.instances import Instances, VmShape, check_ssh_key, vm_spec
from cloudlet.services.lifecycle import State
from cloudlet.services.names import check_name, check_vm_name, hostname_for
from cloudlet.services.networks import instance_nics
from cloudlet.services.operations import OperationContext
from cloudlet.services.snapshots import ready_snapshot


@dataclass(frozen=True)
class CloneRequest:
    name: str
    linked: bool = True
    snapshot: str | None = None  # name or id of a snapshot of the source; None: its current disk
    start: bool = True
    hostname: str | None = None  # default: made from the clone's name (names.hostname_for)
    ssh_keys: tuple[str, ...] | None = None  # default: the source's keys


class Clones:
    def __init__(self, sessions: SessionFactory, instances: Instances) -> None:
        self.sessions = sessions
        self.instances = instances

    def clone(self, ctx: RequestContext, source_ref: str, req: CloneRequest) -> tuple[str, str]:
        """Claim the clone's name, size and address and lock both VMs, then copy the disk in an
        operation. Returns (clone id, operation id)."""
        ctx.require("instance:create")
        check_vm_name(req.name)
        if req.hostname is not None:
            check_name(req.hostname, what="hostname")
        keys = None if req.ssh_keys is None else tuple(check_ssh_key(k) for k in req.ssh_keys)
        host = self.instances.compute.host_resources() if req.start else None
        with transaction(self.sessions) as s:
            source = self.instances.get_vm(s, ctx, source_ref, "are cloned")
            snapshot_id = None if req.snapshot is None else ready_snapshot(s, source, req.snapshot).id
            if snapshot_id is None and source.state != State.STOPPED:
                raise Conflict(
                    f"instance {source.name!r} is {source.state}: stop it, or clone one of its snapshots",
                    code="instance_not_stopped",
                )
            if source.state not in (State.STOPPED, State.RUNNING, State.PAUSED):
                raise Conflict(f"instance {source.name!r} is {source.state}", code="invalid_state")
            installed = (source.config or {}).get("installed_from")
            # A VM installed from an ISO has no base image under its disk: it is copied whole.
            image = None if installed else s.get(Image, source.image_id or "")
            if installed and req.linked:
                raise Conflict(
                    f"instance {source.name!r} was installed from an ISO: it has no base image to link "
                    "a clone to; make a full clone",
                    code="no_base_image",
                )
            nets = [net for _, net in instance_nics(s, [source.id]).get(source.id, [])]
            if (not installed and (image is None or image.path is None)) or not nets:
                raise Conflict(
                    f"instance {source.name!r} has lost its image or network", code="invalid_state"
                )
            if host is not None:
                self.instances.check_memory(s, host, source.memory_mb)
            row = Instance(
                workspace_id=ctx.workspace_id,
                name=req.name,
                kind="vm",
                state=State.PENDING,
                image_id=image.id if image is not None else None,
                hostname=req.hostname or hostname_for(req.name),
                ssh_keys=list(keys if keys is not None else source.ssh_keys),
                config={
                    "cloned_from": source.id,
                    "snapshot": snapshot_id,
                    "linked": req.linked,
                    **({"installed_from": installed} if installed else {}),
                },
            )
            shape = VmShape(source.cpus, source.memory_mb, source.disk_gb)
            pairs, op = self.instances.claim_vm(
                s, ctx, row, shape, nets, [None] * len(nets), "instance.clone"
            )
            self.instances.lock(s, source, op.id, source.state)
            spec = vm_spec(row, image, pairs)
            source_id, clone_id = source.id, row.id
        self.instances.publish(clone_id)
        compute = self.instances.compute

        def step(octx: OperationContext) -> dict[str, Any]:
            result = self.instances.provision(
                octx,
                spec,
                lambda: compute.clone(source_id, spec, linked=req.linked, snapshot_id=snapshot_id),
                start=req.start,
            )
            return {**result, "source_id": source_id, "snapshot_id": snapshot_id, "linked": req.linked}

        def unlock_both() -> None:
            self.instances.unlock(clone_id)
            self.instances.unlock(source_id)

        self.instances.ops.launch(op, step, finally_=unlock_both)
        return clone_id, op.id
