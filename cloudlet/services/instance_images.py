"""Images and VMs meeting: a stopped VM's disk published as a new image, and the installer ISO
ejected from a VM's CD-ROM.

Both are operations holding the VM's lock, like every other action on it: the VM cannot start
while its disk is copied, nor be deleted while its CD-ROM is emptied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from cloudlet.db.models import Image, Instance
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.errors import Conflict
from cloudlet.services.context import RequestContext
from cloudlet.services.images import ImageProperties, Images, check_image_file, hash_file
from cloudlet.services.instances import Instances
from cloudlet.services.lifecycle import State
from cloudlet.services.operations import OperationContext


class InstanceImages:
    def __init__(self, sessions: SessionFactory, images: Images, instances: Instances) -> None:
        self.sessions = sessions
        self.images = images
        self.instances = instances

    def _vm(self, session: Session, ctx: RequestContext, ref: str) -> Instance:
        return self.instances.get_vm(session, ctx, ref, "have disk images and CD-ROMs")

    def publish(self, ctx: RequestContext, vm_ref: str, name: str, props: ImageProperties) -> str:
        """Copy a stopped VM's disk, flattened, into a new image named ``name``; returns the
        operation id (its result names the image). Properties not given are taken from the image
        the VM was made from (an ISO's minimums too: the installed system needs as much)."""
        ctx.require("image:create")
        ctx.require("instance:edit")
        with transaction(self.sessions) as s:
            vm = self._vm(s, ctx, vm_ref)
            if vm.state != State.STOPPED:
                raise Conflict(
                    f"instance {vm.name!r} is {vm.state}: stop it before publishing its disk",
                    code="instance_running" if vm.state == State.RUNNING else "invalid_state",
                )
            origin = s.get(Image, vm.image_id) if vm.image_id else None
            if origin is not None:
                props = ImageProperties(
                    os=props.os if props.os is not None else origin.os,
                    min_disk=props.min_disk if props.min_disk is not None else origin.min_disk,
                    min_memory=props.min_memory if props.min_memory is not None else origin.min_memory,
                )
            image = self.images.add_row(s, ctx, name, f"instance:{vm.name}", props)
            op = self.instances.locked_operation(s, ctx, vm, "instance.publish", vm.state)
            vm_id, image_id = vm.id, image.id
            # The disk is read through to its base image: that file is checked first. A VM
            # installed from an ISO has no base (its CD-ROM is not part of its disk).
            installed = (vm.config or {}).get("installed_from")
            base = (
                (Path(origin.path), origin.format or "qcow2")
                if origin and origin.path and not installed
                else None
            )

        def step(octx: OperationContext) -> dict[str, Any]:
            if base is not None:
                check_image_file(*base)
            staging = self.images.dir / f".publish-{image_id}"
            octx.on_undo("remove copied disk", lambda: staging.unlink(missing_ok=True))
            self.images.dir.mkdir(parents=True, exist_ok=True)
            octx.progress(5, "copying the disk")
            self.instances.compute.export_disk(vm_id, staging)
            octx.progress(70, "hashing")
            sha, size = hash_file(staging)
            return self.images.finish_import(octx, image_id, staging, sha, size, "qcow2")

        def after() -> None:
            self.instances.unlock(vm_id)
            self.images.forget_if_importing(image_id)

        self.instances.ops.launch(op, step, finally_=after)
        return op.id

    def eject(self, ctx: RequestContext, vm_ref: str) -> str:
        """Empty the CD-ROM of a VM installed from an ISO (live if it runs): it boots from its disk
        from then on, and no longer holds the ISO image, which may then be deleted."""
        ctx.require("instance:edit")
        with transaction(self.sessions) as s:
            vm = self._vm(s, ctx, vm_ref)
            media = s.get(Image, vm.image_id) if vm.image_id else None
            if media is None or media.format != "iso":
                raise Conflict(f"instance {vm.name!r} has no media in its CD-ROM", code="no_media")
            if vm.state not in (State.RUNNING, State.STOPPED):
                raise Conflict(f"instance {vm.name!r} is {vm.state}", code="invalid_state")
            op = self.instances.locked_operation(s, ctx, vm, "instance.eject", vm.state)
            vm_id, media_name = vm.id, media.name

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.retry(lambda: self.instances.compute.eject_media(vm_id))
            with transaction(self.sessions) as s:
                row = s.get(Instance, vm_id)
                if row is not None:
                    row.image_id = None
            return {"instance_id": vm_id, "ejected": media_name}

        self.instances.ops.launch(op, step, finally_=lambda: self.instances.unlock(vm_id))
        return op.id
