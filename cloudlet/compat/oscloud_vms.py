"""The VM calls of the OS Cloud API on cloudlet's services, with OS Cloud's behaviour.

What OS Cloud's reference solution did (content/chapters/app-interact/lab/solution/os-cloud/ and
.../solution/so-cloud/ in open-education-hub/operating-systems) and what is kept of it:

- ``vm_create`` wanted name, image, network, mem_size and disk_size, refused in that order with
  "VM <field> not provided", then checked the name ("vm \"X\" already exists"), the network
  ("network \"X\" not found") and the disk template ("disk template \"X\" not found"); it blocked
  until the VM ran and gave ``ssh_key`` to the image's default user. Here the VM gets the key as
  the native API's ``ssh_keys``, and the size it really has is rounded up to whole MiB of memory
  and whole GiB of disk (``vm_info`` shows that size, in bytes).
- ``vm_info`` answered "vm \"N\" not found", ``vm_stop``/``vm_start`` "vm 'N' not found".
- ``vm_start`` of a running VM answered ``{"status": "ok"}`` (it launched a second QEMU that
  could not take the disk and died; the VM ran on): here it is ok and nothing is done.
- ``vm_stop`` of a stopped VM failed inside (no QEMU monitor to reach) and answered
  ``{"status": "error", "error_msg": ""}``: here the same error, with a message.
- ``state`` was RUNNING, STOPPED or PAUSED; cloudlet's other states show in the same style
  (PROVISIONING, STOPPING, ERROR...). A paused VM is PAUSED, never STOPPED, and ``vm_start``
  refuses it: it is resumed, not started. ``vm_stop`` of a paused VM powers it off, as OS Cloud's
  monitor ``quit`` did.
- VM ids are 1, 2, 3... and a deleted VM's id is never given to another (``sequence_ids``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from cloudlet.compat.oscloud_wire import Refusal
from cloudlet.db.models import Image, Instance, Network, Workspace
from cloudlet.errors import CloudletError, NotFound
from cloudlet.services.cloud import Cloud
from cloudlet.services.context import RequestContext
from cloudlet.services.images import usable_image
from cloudlet.services.instances import CreateRequest
from cloudlet.services.lifecycle import State
from cloudlet.services.names import check_vm_name, lookup
from cloudlet.services.networks import instance_nics
from cloudlet.services.sequence_ids import instance_for_number, number_instances, number_of

MIB, GIB = 1024**2, 1024**3
CREATE_TIMEOUT = 900.0  # seconds: OS Cloud's create took "about 1 minute"; a slow host may take more


@dataclass(frozen=True)
class NewVM:
    name: str
    image: str
    network: str
    mem_bytes: int
    disk_bytes: int
    ssh_keys: tuple[str, ...] = ()


class OSCloudVMs:
    def __init__(self, cloud: Cloud, workspace: str) -> None:
        self.cloud = cloud
        self.workspace = workspace

    def context(self) -> RequestContext:
        with self.cloud.db.reads() as s:
            ws = s.scalar(select(Workspace.id).where(Workspace.name == self.workspace))
        if ws is None:
            raise NotFound(f"workspace {self.workspace!r} does not exist", code="workspace_not_found")
        return RequestContext(principal="oscloud", workspace_id=ws)

    def list(self) -> list[dict[str, Any]]:
        ctx = self.context()
        return [
            {"id": n, "name": i.name} for n, i in number_instances(self.cloud.db.sessions, ctx.workspace_id)
        ]

    def create(self, vm: NewVM) -> int:
        """Make the VM and wait until it runs; its OS Cloud id."""
        ctx = self.context()
        check_vm_name(vm.name, what="VM name")
        self._check_references(ctx, vm)
        req = CreateRequest(
            name=vm.name,
            image=vm.image,
            network=vm.network,
            memory=math.ceil(vm.mem_bytes / MIB),
            disk=math.ceil(vm.disk_bytes / GIB),
            ssh_keys=vm.ssh_keys,
        )
        try:
            instance_id, op_id = self.cloud.instances.create(ctx, req)
        except CloudletError as err:  # a twin made in between: the same words as the checks
            messages = {
                "name_taken": f'vm "{vm.name}" already exists',
                "unknown_network": f'network "{vm.network}" not found',
                "unknown_image": f'disk template "{vm.image}" not found',
            }
            if err.code in messages:
                raise Refusal(messages[err.code], code=err.code) from None
            raise
        number = number_of(self.cloud.db.sessions, instance_id)  # numbered in the order of creation
        self._wait(ctx, op_id, CREATE_TIMEOUT)
        return number

    def _check_references(self, ctx: RequestContext, vm: NewVM) -> None:
        """OS Cloud's checks, in its order: the name is free, the network and the template exist."""
        ws = ctx.workspace_id
        with self.cloud.db.reads() as s:
            if s.scalar(select(Instance.id).where(Instance.workspace_id == ws, Instance.name == vm.name)):
                raise Refusal(f'vm "{vm.name}" already exists', code="name_taken")
            try:
                lookup(s, Network, ws, vm.network, "network")
            except NotFound:
                raise Refusal(f'network "{vm.network}" not found', code="unknown_network") from None
            try:
                usable_image(s, ws, vm.image)
            except NotFound:
                raise Refusal(f'disk template "{vm.image}" not found', code="unknown_image") from None

    def info(self, number: int | None, shown: str) -> dict[str, Any]:
        ctx = self.context()
        inst = self._find(ctx, number, f'vm "{shown}" not found')
        with self.cloud.db.reads() as s:
            nics = instance_nics(s, [inst.id]).get(inst.id)
            image = s.scalar(select(Image.name).where(Image.id == inst.image_id)) if inst.image_id else None
            network = s.scalar(select(Network.name).where(Network.id == inst.network_id))
        return {
            "disk_size": inst.disk_gb * GIB,
            "id": number,
            "ip": nics[0][0].address if nics else None,
            "mem_size": inst.memory_mb * MIB,
            "name": inst.name,
            "network": network,
            "os": image or (inst.config or {}).get("installed_from"),
            "state": str(inst.state).upper(),
        }

    def stop(self, number: int | None, shown: str) -> None:
        ctx = self.context()
        inst = self._find(ctx, number, f"vm '{shown}' not found")
        if inst.state == State.STOPPED:
            raise Refusal(f"vm '{shown}' is already stopped", code="not_running")
        # A paused (or failed) VM cannot shut down by itself: it is powered off, as OS Cloud's
        # monitor "quit" did. A running one is asked first (ACPI), then forced after stop_timeout.
        action = "force-stop" if inst.state in (State.PAUSED, State.ERROR) else "stop"
        op_id = self.cloud.instances.action(ctx, inst.id, action)
        self._wait(ctx, op_id, self.cloud.settings.stop_timeout + CREATE_TIMEOUT)

    def start(self, number: int | None, shown: str) -> None:
        ctx = self.context()
        inst = self._find(ctx, number, f"vm '{shown}' not found")
        if inst.state == State.RUNNING:
            return  # OS Cloud answered ok, and the VM ran on
        if inst.state == State.PAUSED:
            raise Refusal(
                f"vm '{shown}' is paused, not stopped: it is resumed, not started "
                f"(cloudlet's POST /api/v1/instances/{inst.id}/actions/resume)",
                code="vm_paused",
            )
        self._wait(ctx, self.cloud.instances.action(ctx, inst.id, "start"), CREATE_TIMEOUT)

    def _find(self, ctx: RequestContext, number: int | None, missing: str) -> Instance:
        inst = (
            None if number is None else instance_for_number(self.cloud.db.sessions, ctx.workspace_id, number)
        )
        if inst is None:
            raise Refusal(missing, code="vm_not_found")
        return inst

    def _wait(self, ctx: RequestContext, op_id: str, timeout: float) -> None:
        op = self.cloud.ops.wait(ctx, op_id, timeout)
        if op.status == "failed":
            raise Refusal((op.error or {}).get("detail") or "the operation failed", code="operation_failed")
        if op.status != "succeeded":
            raise Refusal(f"not done after {timeout:.0f} s (operation {op.id})", code="timeout")
