"""Declarative set-ups: make a workspace's networks, images, VMs, containers and pools match a
document, as ``terraform plan/apply`` does for a cloud.

``plan`` compares the document with what exists and lists the changes; nothing else is touched.
``apply`` refuses the whole document while the plan has a conflict (a change cloudlet will not make
in place, such as a VM's image or a network's range), so a bad file changes nothing; otherwise it
makes the changes in one operation, in dependency order (networks, images, VMs, containers, pools),
each through the same service call the API uses, waiting for each step before the next. Applying
the same document twice changes nothing the second time.

What a document leaves out is left alone: apply creates and converges, it never deletes what the
file does not name. Settings that only matter at first boot (SSH keys, user-data, users) are not
compared for existing VMs: cloud-init has already used them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudlet.db.models import Image, Instance, Network, Pool
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.errors import Conflict, Invalid
from cloudlet.services import containers
from cloudlet.services.context import RequestContext
from cloudlet.services.images import Images
from cloudlet.services.instances import CreateRequest, Instances
from cloudlet.services.lifecycle import State
from cloudlet.services.networks import Networks
from cloudlet.services.operations import OperationContext, Operations, OpStatus
from cloudlet.services.pools import Pools, PoolSpec

STEP_TIMEOUT = 1800.0  # seconds one step (an image import, a VM create) may take
MAX_ITEMS = 200  # per kind in one document


# What each change asks of the caller: the same permissions as the API calls it stands for.
PERMISSIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("network", "create"): ("network:create",),
    ("image", "create"): ("image:create",),
    ("pool", "create"): ("pool:create",),
    ("pool", "update"): ("pool:edit",),
    **{(kind, "create"): ("instance:create",) for kind in ("vm", "container")},
    **{(kind, a): ("instance:edit",) for kind in ("vm", "container") for a in ("resize", "start", "stop")},
    ("container", "replace"): ("instance:delete", "instance:create"),
}


@dataclass(frozen=True)
class NetworkDef:
    name: str
    cidr: str
    mode: str = "nat"


@dataclass(frozen=True)
class ImageDef:
    name: str
    path: str  # a file on the server host, in an allowed import folder


@dataclass(frozen=True)
class VmDef:
    request: CreateRequest
    state: str = "running"  # running | stopped


@dataclass(frozen=True)
class ContainerDef:
    request: containers.ContainerRequest
    state: str = "running"


@dataclass(frozen=True)
class Document:
    networks: tuple[NetworkDef, ...] = ()
    images: tuple[ImageDef, ...] = ()
    vms: tuple[VmDef, ...] = ()
    containers: tuple[ContainerDef, ...] = ()
    pools: tuple[PoolSpec, ...] = ()


@dataclass(frozen=True)
class Change:
    """One line of a plan: ``action`` on the ``kind`` named ``name``; ``detail`` says what differs."""

    kind: str  # network | image | vm | container | pool
    name: str
    action: str  # create | resize | start | stop | replace | update | conflict
    detail: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


class Apply:
    def __init__(
        self,
        sessions: SessionFactory,
        ops: Operations,
        networks: Networks,
        images: Images,
        instances: Instances,
        pools: Pools,
    ) -> None:
        self.sessions = sessions
        self.ops = ops
        self.networks = networks
        self.images = images
        self.instances = instances
        self.pools = pools
        self._running: set[str] = set()  # workspaces with an apply under way in this process
        self._running_lock = threading.Lock()

    # -- plan ------------------------------------------------------------------------------------
    def plan(self, ctx: RequestContext, doc: Document) -> list[Change]:
        _check_unique(doc)
        with self.sessions() as s:
            _check_references(s, ctx, doc)
            instances: dict[str, Instance] = _by_name(s, Instance, ctx)  # read once for VMs and containers
            return [
                *self._plan_networks(s, ctx, doc.networks),
                *self._plan_images(s, ctx, doc.images),
                *self._plan_vms(s, instances, doc.vms),
                *self._plan_containers(instances, doc.containers),
                *self._plan_pools(s, ctx, doc.pools),
            ]

    @staticmethod
    def _plan_networks(session: Session, ctx: RequestContext, nets: tuple[NetworkDef, ...]) -> list[Change]:
        found = _by_name(session, Network, ctx)
        changes = []
        for want in nets:
            have = found.get(want.name)
            if have is None:
                changes.append(Change("network", want.name, "create", f"{want.cidr} {want.mode}"))
            elif (have.cidr, have.mode) != (want.cidr, want.mode):
                changes.append(
                    Change(
                        "network",
                        want.name,
                        "conflict",
                        f"is {have.cidr} {have.mode}, the file says {want.cidr} {want.mode}: a network's "
                        "range and mode do not change; delete it first",
                    )
                )
        return changes

    @staticmethod
    def _plan_images(session: Session, ctx: RequestContext, images: tuple[ImageDef, ...]) -> list[Change]:
        found = _by_name(session, Image, ctx)
        return [Change("image", i.name, "create", f"from {i.path}") for i in images if i.name not in found]

    @staticmethod
    def _plan_vms(session: Session, found: dict[str, Instance], vms: tuple[VmDef, ...]) -> list[Change]:
        # only the names of the images and networks the workspace's instances use
        image_ids = {i.image_id for i in found.values() if i.image_id}
        network_ids = {i.network_id for i in found.values() if i.network_id}
        images = {
            i: n for i, n in session.execute(select(Image.id, Image.name).where(Image.id.in_(image_ids)))
        }
        networks = {
            i: n
            for i, n in session.execute(select(Network.id, Network.name).where(Network.id.in_(network_ids)))
        }
        changes = []
        for vm in vms:
            req, have = vm.request, found.get(vm.request.name)
            if have is None:
                shape = f"{req.cpus} vCPU, {req.memory} MiB, {req.disk} GiB"
                changes.append(Change("vm", req.name, "create", f"{req.image}, {shape}"))
                if vm.state == "stopped":
                    changes.append(Change("vm", req.name, "stop"))
                continue
            if have.kind != "vm":
                changes.append(Change("vm", req.name, "conflict", f"{req.name!r} is a {have.kind}"))
                continue
            primary = req.nics[0].network if req.nics else req.network
            immutable = {
                "image": (images.get(have.image_id or ""), req.image),
                "network": (networks.get(have.network_id or ""), primary),
            }
            wrong = _differences(immutable)
            if req.disk < have.disk_gb:
                wrong.append(f"disk is {have.disk_gb} GiB, the file says {req.disk}: disks only grow")
            if wrong:
                changes.append(Change("vm", req.name, "conflict", "; ".join(wrong) + "; delete it first"))
                continue
            size = {
                "cpus": (have.cpus, req.cpus),
                "memory": (have.memory_mb, req.memory),
                "disk": (have.disk_gb, req.disk),
            }
            grow = {k: b for k, (a, b) in size.items() if a != b}
            running = have.state in (State.RUNNING, State.PAUSED)
            if grow:
                detail = ", ".join(f"{k} {size[k][0]} -> {v}" for k, v in grow.items())
                cold = running and bool({"cpus", "memory"} & grow.keys())
                changes.append(
                    Change("vm", req.name, "resize", detail + (" (stops it)" if cold else ""), grow)
                )
                running = running and not cold
            if vm.state == "running" and not running:
                changes.append(Change("vm", req.name, "start", f"is {have.state}"))
            elif vm.state == "stopped" and running:
                changes.append(Change("vm", req.name, "stop", f"is {have.state}"))
        return changes

    @staticmethod
    def _plan_containers(found: dict[str, Instance], boxes: tuple[ContainerDef, ...]) -> list[Change]:
        changes = []
        for box in boxes:
            req, have = box.request, found.get(box.request.name)
            if have is None:
                changes.append(Change("container", req.name, "create", req.image))
                if box.state == "stopped":
                    changes.append(Change("container", req.name, "stop"))
                continue
            if have.kind != "container":
                changes.append(Change("container", req.name, "conflict", f"{req.name!r} is a {have.kind}"))
                continue
            want = _plain(containers.to_config(req))
            differs = sorted(k for k, v in want.items() if _plain((have.config or {}).get(k)) != v)
            if differs:  # a container is made once: a new configuration is a new container
                changes.append(Change("container", req.name, "replace", "changed: " + ", ".join(differs)))
                if box.state == "stopped":
                    changes.append(Change("container", req.name, "stop"))
                continue
            running = have.state == State.RUNNING
            if box.state == "running" and not running:
                changes.append(Change("container", req.name, "start", f"is {have.state}"))
            elif box.state == "stopped" and running:
                changes.append(Change("container", req.name, "stop", f"is {have.state}"))
        return changes

    @staticmethod
    def _plan_pools(session: Session, ctx: RequestContext, pools: tuple[PoolSpec, ...]) -> list[Change]:
        found = _by_name(session, Pool, ctx)
        changes = []
        for spec in pools:
            have = found.get(spec.name)
            if have is None:
                changes.append(
                    Change("pool", spec.name, "create", f"{spec.min_ready}-{spec.max_size} x {spec.image}")
                )
                continue
            t = have.template
            wanted = {
                "image": (t.get("image"), spec.image),
                "cpus": (t.get("cpus"), spec.cpus),
                "memory": (t.get("memory"), spec.memory),
                "disk": (t.get("disk"), spec.disk),
                "network": (t.get("network"), spec.network),
                "ssh_keys": (t.get("ssh_keys"), [k.strip() for k in spec.ssh_keys]),  # stored stripped
                "user_data": (t.get("user_data"), spec.user_data),
                "ssh_user": (t.get("ssh_user"), spec.ssh_user),
                "probe_port": (t.get("probe_port"), spec.probe_port),
                "min_ready": (have.min_ready, spec.min_ready),
                "max_size": (have.max_size, spec.max_size),
                "lease_default": (have.lease_default, spec.lease_default),
                "lease_max": (have.lease_max, spec.lease_max),
                "on_checkin": (have.on_checkin, spec.on_checkin),
                "idle_timeout": (have.idle_timeout, spec.idle_timeout),
                "legacy_api": (have.legacy_api, spec.legacy_api),
            }
            # A pool changes in place: VMs made from now on follow the new template.
            differs = [f"{k} {have!r} -> {want!r}" for k, (have, want) in wanted.items() if have != want]
            if differs:
                changes.append(Change("pool", spec.name, "update", "; ".join(differs)))
        return changes

    # -- apply -----------------------------------------------------------------------------------
    def apply(self, ctx: RequestContext, doc: Document) -> tuple[list[Change], str | None]:
        """Plan, refuse on conflicts, then make the changes in an operation. Returns the plan and
        the operation's id (None when there is nothing to do)."""
        changes = self.plan(ctx, doc)
        conflicts = [c for c in changes if c.action == "conflict"]
        if conflicts:
            raise Conflict(
                f"{len(conflicts)} change(s) cannot be made in place: "
                + "; ".join(f"{c.kind} {c.name}: {c.detail}" for c in conflicts),
                code="apply_conflict",
                conflicts=[asdict(c) for c in conflicts],
            )
        if not changes:
            return changes, None
        for change in changes:  # all or nothing: a missing permission stops the apply before it starts
            for permission in PERMISSIONS[(change.kind, change.action)]:
                ctx.require(permission)
        with self._running_lock:
            if ctx.workspace_id in self._running:
                raise Conflict("another apply is running in this workspace", code="apply_running")
            self._running.add(ctx.workspace_id)
        try:
            with transaction(self.sessions) as s:
                op = self.ops.record(s, ctx, "apply", "workspace", ctx.workspace_id)
        except BaseException:
            self._done(ctx.workspace_id)
            raise
        self.ops.launch(
            op, lambda octx: self._run(octx, ctx, doc, changes), finally_=lambda: self._done(ctx.workspace_id)
        )
        return changes, op.id

    def _done(self, workspace_id: str) -> None:
        with self._running_lock:
            self._running.discard(workspace_id)

    def _run(
        self, octx: OperationContext, ctx: RequestContext, doc: Document, changes: list[Change]
    ) -> dict[str, Any]:
        nets = {n.name: n for n in doc.networks}
        images = {i.name: i for i in doc.images}
        vms = {v.request.name: v for v in doc.vms}
        boxes = {b.request.name: b for b in doc.containers}
        pools = {p.name: p for p in doc.pools}
        done: list[dict[str, Any]] = []
        for n, change in enumerate(changes):
            octx.progress(int(100 * n / len(changes)), f"{change.action} {change.kind} {change.name}")
            step = self._step(ctx, change, nets, images, vms, boxes, pools)
            op_id = step()
            if op_id is not None:
                self._wait(ctx, op_id, change)
            done.append(asdict(change))
        return {"changes": done}

    def _step(
        self,
        ctx: RequestContext,
        change: Change,
        nets: dict[str, NetworkDef],
        images: dict[str, ImageDef],
        vms: dict[str, VmDef],
        boxes: dict[str, ContainerDef],
        pools: dict[str, PoolSpec],
    ) -> Callable[[], str | None]:
        """What makes ``change``: a call returning the operation to wait for, if any."""
        name, kind, action = change.name, change.kind, change.action
        if kind == "network":
            net = nets[name]
            return lambda: self.networks.create(ctx, net.name, net.cidr, net.mode)
        if kind == "image":
            return lambda: self.images.import_path(ctx, name, images[name].path)
        if kind == "pool" and action == "update":
            return lambda: self._update_pool(ctx, pools[name])
        if kind == "pool":
            return lambda: self._create_pool(ctx, pools[name])
        if action == "create":
            if kind == "vm":
                return lambda: self.instances.create(ctx, vms[name].request)[1]
            return lambda: self.instances.create_container(ctx, boxes[name].request)[1]
        if action == "replace":
            return lambda: self._replace(ctx, boxes[name].request)
        if action == "resize":
            return lambda: self._resize(ctx, name, change.fields)
        if action in ("start", "stop"):
            return lambda: self.instances.action(ctx, name, action)
        raise AssertionError(f"no step for {action} {kind}")

    def _create_pool(self, ctx: RequestContext, spec: PoolSpec) -> None:
        self.pools.create(ctx, spec)  # made at once; its controller boots the VMs in the background

    def _update_pool(self, ctx: RequestContext, spec: PoolSpec) -> None:
        self.pools.update(ctx, spec.name, spec)  # at once; its controller follows in the background

    def _replace(self, ctx: RequestContext, req: containers.ContainerRequest) -> str:
        self._wait(ctx, self.instances.action(ctx, req.name, "delete", force=True), None)
        return self.instances.create_container(ctx, req)[1]

    def _resize(self, ctx: RequestContext, name: str, grow: dict[str, int]) -> str:
        """vCPUs and memory change while the VM is stopped: stop it first (a following ``start``
        change brings it back when the file wants it running)."""
        with self.sessions() as s:
            state = s.scalar(
                select(Instance.state).where(Instance.workspace_id == ctx.workspace_id, Instance.name == name)
            )
        if ({"cpus", "memory"} & grow.keys()) and state != State.STOPPED:
            self._wait(ctx, self.instances.action(ctx, name, "stop"), None)
        return self.instances.resize(
            ctx, name, cpus=grow.get("cpus"), memory=grow.get("memory"), disk=grow.get("disk")
        )

    def _wait(self, ctx: RequestContext, op_id: str, change: Change | None) -> None:
        op = self.ops.wait(ctx, op_id, STEP_TIMEOUT)
        if op.status != OpStatus.SUCCEEDED:
            what = f"{change.action} {change.kind} {change.name}" if change else op.kind
            detail = (op.error or {}).get("detail") or f"still {op.status} after {STEP_TIMEOUT:.0f} s"
            raise Conflict(f"{what} failed: {detail}", code="apply_step_failed", operation_id=op_id)


def _by_name(session: Session, model: Any, ctx: RequestContext) -> dict[str, Any]:
    rows = session.scalars(select(model).where(model.workspace_id == ctx.workspace_id))
    return {r.name: r for r in rows}


def _differences(pairs: dict[str, tuple[Any, Any]]) -> list[str]:
    """What a conflict says: each field whose (existing, wanted) values differ."""
    return [f"{k} is {have!r}, the file says {want!r}" for k, (have, want) in pairs.items() if have != want]


def _plain(value: Any) -> Any:
    """Tuples as lists, as they come back from the database's JSON."""
    return json.loads(json.dumps(value))


def _check_references(session: Session, ctx: RequestContext, doc: Document) -> None:
    """Every image and network a VM or pool names exists, or the document makes it."""
    images = set(_by_name(session, Image, ctx)) | {i.name for i in doc.images}
    images |= {i.name for i in session.scalars(select(Image).where(Image.public.is_(True)))}
    networks = set(_by_name(session, Network, ctx)) | {n.name for n in doc.networks}
    wanted: list[tuple[str, str, str]] = []  # (what, name, who)
    for vm in doc.vms:
        req = vm.request
        wanted.append(("image", req.image, f"VM {req.name}"))
        for nic in req.nics or ():
            wanted.append(("network", nic.network, f"VM {req.name}"))
        if not req.nics:
            wanted.append(("network", req.network, f"VM {req.name}"))
    for box in doc.containers:
        wanted.append(("network", box.request.network, f"container {box.request.name}"))
    for pool in doc.pools:
        wanted += [("image", pool.image, f"pool {pool.name}"), ("network", pool.network, f"pool {pool.name}")]
    missing = [
        f"{who} names {what} {name!r}"
        for what, name, who in wanted
        if name not in (images if what == "image" else networks)
    ]
    if missing:
        raise Invalid(
            "unknown references (neither in this workspace nor in the document): " + "; ".join(missing),
            code="invalid_document",
        )


def _check_unique(doc: Document) -> None:
    groups: dict[str, list[str]] = {
        "network": [n.name for n in doc.networks],
        "image": [i.name for i in doc.images],
        "instance": [v.request.name for v in doc.vms] + [c.request.name for c in doc.containers],
        "pool": [p.name for p in doc.pools],
    }
    for kind, names in groups.items():
        if len(names) > MAX_ITEMS:
            raise Invalid(f"at most {MAX_ITEMS} {kind}s in one document", code="invalid_document")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise Invalid(f"{kind} name(s) given twice: {', '.join(twice)}", code="invalid_document")
