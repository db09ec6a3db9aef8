"""Instances, VMs and containers alike: create with IP allocation and compensation, actions under a
per-instance lock, delete that leaves nothing behind. The kind picks the driver; everything else
(names, IPAM, operations, events, the state machine) is shared."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudlet.config import Settings
from cloudlet.db.models import (
    ConsoleTicket,
    Image,
    Instance,
    IPAllocation,
    Network,
    Operation,
    PoolMember,
    Snapshot,
    Volume,
)
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.drivers.base import ComputeDriver, DhcpHost, HostResources, InstanceSpec, NetworkDriver, NicSpec
from cloudlet.drivers.containers import ContainerDriver
from cloudlet.drivers.libvirt.seed import validate_ssh_key
from cloudlet.errors import Conflict, DriverUnavailable, InsufficientResources, Invalid, NotFound, Unsupported
from cloudlet.services import cloudinit, container_images, containers, quotas
from cloudlet.services.cloudinit import GuestUser, StaticNic
from cloudlet.services.context import RequestContext
from cloudlet.services.events import Event, EventBus
from cloudlet.services.images import check_fits, check_image_file, usable_image
from cloudlet.services.lifecycle import FROM_POWER, State, check_action
from cloudlet.services.names import check_name, check_vm_name, hostname_for, lookup
from cloudlet.services.networks import Networks, network_spec
from cloudlet.services.operations import OperationContext, Operations

GIB = 1024**3
MAX_CPUS = 64
MAX_MEMORY_MB = 1024 * 1024
MAX_DISK_GB = 64 * 1024


@dataclass(frozen=True)
class NicRequest:
    network: str
    ip: str | None = None  # a chosen address; default: the lowest free one


MAX_NICS = 8


@dataclass(frozen=True)
class CreateRequest:
    name: str
    image: str
    cpus: int = 1
    memory: int = 512  # MiB
    disk: int = 1  # GiB
    network: str = "default"
    hostname: str | None = None
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None  # cloud-init user-data: "#cloud-config" YAML, a "#!" script...
    users: tuple[GuestUser, ...] = ()  # guest users cloud-init creates
    ssh_password_auth: bool = False  # let users with passwords log in over SSH
    ip: str | None = None  # a chosen address on the network; default: the lowest free one
    static_ip: bool = False  # write the address into the guest's network config instead of DHCP
    dns: tuple[str, ...] = ()  # nameservers for the static config; default: the network's gateway
    network_config: dict[str, Any] | None = None  # the caller's own cloud-init network config
    nics: tuple[NicRequest, ...] = ()  # several NICs, the first the primary; replaces network and ip


def check_size(cpus: int, memory: int, disk: int) -> None:
    """vCPUs, memory (MiB) and disk (GiB) within what cloudlet gives one VM."""
    if not 1 <= cpus <= MAX_CPUS:
        raise Invalid(f"cpus must be between 1 and {MAX_CPUS}", code="invalid_size")
    if not 64 <= memory <= MAX_MEMORY_MB:
        raise Invalid(f"memory must be between 64 and {MAX_MEMORY_MB} MiB", code="invalid_size")
    if not 1 <= disk <= MAX_DISK_GB:
        raise Invalid(f"disk must be between 1 and {MAX_DISK_GB} GiB", code="invalid_size")


def check_ssh_key(key: str) -> str:
    """The key, stripped, if it is one OpenSSH public key line that the seed builder will accept."""
    try:
        key = validate_ssh_key(key)
    except ValueError as err:
        raise Invalid(f"not an OpenSSH public key ({err}): {key[:40]!r}", code="invalid_ssh_key") from None
    if not key.split()[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise Invalid(f"not an OpenSSH public key: {key[:40]!r}", code="invalid_ssh_key")
    return key


@dataclass(frozen=True)
class VmShape:
    cpus: int
    memory_mb: int
    disk_gb: int


def vm_spec(
    row: Instance,
    image: Image | None,
    nics: list[tuple[Network, IPAllocation]],
    *,
    install_media: Path | None = None,
    user_data: str | None = None,
    network_config: str | None = None,
) -> InstanceSpec:
    """What the driver needs to build the VM ``row`` (claimed, with its NICs) on ``image``."""
    return InstanceSpec(
        id=row.id,
        name=row.name,
        workspace_id=row.workspace_id,
        cpus=row.cpus,
        memory_mb=row.memory_mb,
        disk_gb=row.disk_gb,
        image_path=Path(image.path or "") if image is not None else None,
        image_format=(image.format or "qcow2") if image is not None else None,
        install_media=install_media,
        hostname=row.hostname,
        ssh_keys=tuple(row.ssh_keys),
        user_data=user_data,
        network_config=network_config,
        nics=tuple(NicSpec(net.backend_name, a.mac, a.address) for net, a in nics),
    )


def _image_files(spec: InstanceSpec) -> list[tuple[Path, str]]:
    """The image files (path, format) a VM is built on: its base image, its installer ISO."""
    files = []
    if spec.image_path is not None and spec.image_format is not None:
        files.append((spec.image_path, spec.image_format))
    if spec.install_media is not None:
        files.append((spec.install_media, "iso"))
    return files


class Instances:
    def __init__(
        self,
        settings: Settings,
        sessions: SessionFactory,
        ops: Operations,
        bus: EventBus,
        compute: ComputeDriver,
        network_driver: NetworkDriver,
        networks: Networks,
        container_driver: ContainerDriver | None = None,
    ) -> None:
        self.container_driver = container_driver
        self.settings = settings
        self.sessions = sessions
        self.ops = ops
        self.bus = bus
        self.compute = compute
        self.network_driver = network_driver
        self.networks = networks

    def container_engine(self) -> ContainerDriver:
        if self.container_driver is None:
            raise DriverUnavailable("containers are off on this server (container_driver = none)")
        return self.container_driver

    def driver(self, kind: str) -> ComputeDriver:
        return self.container_engine() if kind == "container" else self.compute

    # -- reading ---------------------------------------------------------------------------------
    def get(self, session: Session, ctx: RequestContext, ref: str) -> Instance:
        return lookup(session, Instance, ctx.workspace_id, ref, "instance")

    def get_vm(self, session: Session, ctx: RequestContext, ref: str, doing: str) -> Instance:
        """As ``get``, and 422 ``not_a_vm`` for a container: "only VMs <doing>"."""
        row = self.get(session, ctx, ref)
        if row.kind != "vm":
            raise Invalid(f"only VMs {doing}", code="not_a_vm")
        return row

    def search(
        self,
        session: Session,
        ctx: RequestContext,
        *,
        state: str | None = None,
        name: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Instance], int]:
        query = select(Instance).where(Instance.workspace_id == ctx.workspace_id)
        if kind:
            query = query.where(Instance.kind == kind)
        if state:
            query = query.where(Instance.state == state)
        if name:
            query = query.where(Instance.name.contains(name, autoescape=True))
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(Instance.created_at, Instance.name).limit(limit).offset(offset))
        return list(rows), total

    # -- create ----------------------------------------------------------------------------------
    def _validate(self, req: CreateRequest) -> CreateRequest:
        """Check the request; return it with its SSH keys normalized and passwords hashed."""
        check_vm_name(req.name)
        if req.hostname is not None:
            check_name(req.hostname, what="hostname")
        check_size(req.cpus, req.memory, req.disk)
        if req.user_data is not None:
            cloudinit.check_user_data(req.user_data)
        if req.network_config is not None:
            if req.static_ip:
                raise Invalid("give static_ip or network_config, not both", code="invalid_network_config")
            cloudinit.check_network_config(req.network_config)
        if req.dns and not req.static_ip:
            raise Invalid("dns is for static_ip configurations", code="invalid_dns")
        if req.nics and (req.ip is not None or req.network != "default"):
            raise Invalid("give nics, or network and ip, not both", code="invalid_nics")
        if len(req.nics) > MAX_NICS:
            raise Invalid(f"at most {MAX_NICS} NICs", code="invalid_nics")
        return replace(
            req,
            nics=req.nics or (NicRequest(req.network, req.ip),),
            ssh_keys=tuple(check_ssh_key(k) for k in req.ssh_keys),
            users=cloudinit.check_users(req.users, check_ssh_key),
            dns=cloudinit.check_nameservers(req.dns),
        )

    @staticmethod
    def _seed(
        req: CreateRequest, hostname: str, nics: list[tuple[Network, IPAllocation]]
    ) -> tuple[str | None, str | None]:
        """The seed's user-data and network config (None: the defaults)."""
        user_data = cloudinit.compose_user_data(
            hostname=hostname,
            ssh_keys=req.ssh_keys,
            users=req.users,
            user_data=req.user_data,
            ssh_password_auth=req.ssh_password_auth,
        )
        if req.network_config is not None:
            return user_data, cloudinit.check_network_config(req.network_config)
        if not req.static_ip:
            return user_data, None
        primary = nics[0][0]
        static = [
            StaticNic(
                alloc.mac,
                f"{alloc.address}/{ipaddress.ip_network(net.cidr).prefixlen}",
                net.gateway,
                (req.dns or (primary.gateway,)) if index == 0 else (),
            )
            for index, (net, alloc) in enumerate(nics)
        ]
        return user_data, cloudinit.static_network_config(static)

    def check_memory(self, session: Session, host: HostResources, memory_mb: int) -> None:
        """Refuse a VM that would not fit in the host's available memory less the reserve. Memory
        promised to VMs still being created counts as taken, so parallel creates cannot overshoot."""
        promised = (
            session.scalar(
                select(func.coalesce(func.sum(Instance.memory_mb), 0)).where(
                    Instance.state.in_([State.PENDING, State.PROVISIONING])
                )
            )
            or 0
        )
        free = host.memory_available_mb - self.settings.memory_reserve_mb - promised
        if memory_mb > free:
            raise InsufficientResources(
                f"{memory_mb} MiB requested but only {max(free, 0)} MiB can be given: the host has "
                f"{host.memory_available_mb} MiB available, keeps {self.settings.memory_reserve_mb} MiB in "
                f"reserve and {promised} MiB are promised to VMs being created",
                code="insufficient_memory",
                requested_mb=memory_mb,
                available_mb=host.memory_available_mb,
                reserve_mb=self.settings.memory_reserve_mb,
            )

    def create(self, ctx: RequestContext, req: CreateRequest) -> tuple[str, str]:
        """Validate, claim name, memory and IP atomically, then provision in an operation.
        Returns (instance id, operation id)."""
        req = self._validate(req)
        host = self.compute.host_resources()  # asked before the transaction: no lock held meanwhile
        with transaction(self.sessions) as s:
            try:
                image = usable_image(s, ctx.workspace_id, req.image)
            except NotFound as err:
                raise Invalid(err.detail, code="unknown_image") from None
            if image.status != "ready":
                raise Conflict(f"image {image.name!r} is not ready ({image.status})", code="image_not_ready")
            nets = [self._active_network(s, ctx, nic.network) for nic in req.nics]
            check_fits(image, req.disk, req.memory)
            iso = image.format == "iso"
            if iso and not self.compute.capabilities.iso_install:
                raise Unsupported(f"the {self.compute.name} driver cannot install VMs from an ISO")
            self.check_memory(s, host, req.memory)
            shape = VmShape(req.cpus, req.memory, req.disk)
            row = Instance(
                workspace_id=ctx.workspace_id,
                name=req.name,
                kind="vm",
                state=State.PENDING,
                image_id=image.id,
                hostname=req.hostname or hostname_for(req.name),
                ssh_keys=list(req.ssh_keys),
                # installed from an ISO: no base image under its disk (image_id goes at eject)
                config={"installed_from": image.name} if iso else None,
            )
            pairs, op = self.claim_vm(s, ctx, row, shape, nets, [nic.ip for nic in req.nics])
            user_data, network_config = self._seed(req, row.hostname, pairs)
            spec = vm_spec(
                row,
                None if iso else image,
                pairs,
                install_media=Path(image.path or "") if iso else None,
                user_data=user_data,
                network_config=network_config,
            )
            instance_id = row.id
        self.publish(instance_id)
        self.ops.launch(
            op, lambda octx: self.provision(octx, spec), finally_=lambda: self.unlock(instance_id)
        )
        return instance_id, op.id

    def claim_vm(
        self,
        session: Session,
        ctx: RequestContext,
        row: Instance,
        shape: VmShape,
        nets: list[Network],
        ips: list[str | None],
        kind: str = "instance.create",
    ) -> tuple[list[tuple[Network, IPAllocation]], Operation]:
        """Claim a new VM's quota, name and an address on each network (``ips``: chosen ones or
        None) in the caller's transaction; returns its NICs' (network, allocation) pairs and the
        operation that holds its lock."""
        quotas.claim(
            session,
            ctx.workspace_id,
            instances=1,
            vcpus=shape.cpus,
            memory_mb=shape.memory_mb,
            disk_gb=shape.disk_gb,
            ips=len(nets),
        )
        row.cpus, row.memory_mb, row.disk_gb, row.network_id = (
            shape.cpus,
            shape.memory_mb,
            shape.disk_gb,
            nets[0].id,
        )
        alloc, op = self.claim(session, ctx, row, nets[0], ips[0], kind=kind)
        allocs = [alloc] + [
            self.networks.allocate(session, net, row.id, address=ip)
            for net, ip in zip(nets[1:], ips[1:], strict=True)
        ]
        return list(zip(nets, allocs, strict=True)), op

    @staticmethod
    def _active_network(session: Session, ctx: RequestContext, ref: str) -> Network:
        net: Network = lookup_ref(session, Network, ctx, ref, "network")
        if net.status != "active":
            raise Conflict(f"network {net.name!r} is not active ({net.status})", code="network_not_ready")
        return net

    def claim(
        self,
        session: Session,
        ctx: RequestContext,
        row: Instance,
        net: Network,
        ip: str | None = None,
        kind: str = "instance.create",
    ) -> tuple[IPAllocation, Operation]:
        """Insert the instance (its name is unique per workspace, and so is the hostname a VM
        takes from its name), take its address and record the create operation, which holds the
        instance's lock, all in the caller's transaction."""
        if row.kind == "vm" and row.hostname == hostname_for(row.name):
            row.dns_name = row.hostname
        try:
            with session.begin_nested():  # added inside: begin_nested flushes what is pending first
                session.add(row)
                session.flush()
        except IntegrityError:
            raise _taken(session, row) from None
        alloc = self.networks.allocate(session, net, row.id, address=ip)
        op = self.ops.record(session, ctx, kind, "instance", row.id)
        row.locked_by = op.id
        return alloc, op

    def provision(
        self,
        octx: OperationContext,
        spec: InstanceSpec,
        make: Callable[[], None] | None = None,
        *,
        start: bool = True,
    ) -> dict[str, Any]:
        """Build a claimed instance on its backend (by ``make``, default the driver's ``create``)
        and start it; every step is undone if a later one fails. A VM's image (and ISO) is checked
        first, right before the backend opens it (``check_image_file``)."""
        octx.on_undo("forget instance", lambda: self._forget(spec.id))
        for path, fmt in _image_files(spec):
            check_image_file(path, fmt)
        self._set_state(spec.id, State.PROVISIONING)
        driver: ComputeDriver = self.compute
        if spec.container is None:  # VMs ask DHCP; containers get their address set directly
            for nic in spec.nics:
                self._reserve(octx, nic.network, DhcpHost(nic.mac, nic.ip, spec.hostname))
            octx.progress(20, "creating disk and domain")
        else:
            driver = self.container_engine()
            octx.progress(20, "creating container")
        octx.retry(make or (lambda: driver.create(spec)))
        octx.on_undo("delete from the backend", lambda: driver.delete(spec.id))
        if spec.container is not None:
            self._record_short_id(spec.id)
        if start:
            octx.progress(60, "starting")
            octx.retry(lambda: driver.start(spec.id))
        self._set_state(spec.id, State.RUNNING if start else State.STOPPED)
        return {"instance_id": spec.id, "ip": spec.nics[0].ip if spec.nics else None}

    def _record_short_id(self, instance_id: str) -> None:
        short_id = self.container_engine().details(instance_id).short_id
        with transaction(self.sessions) as s:
            row = s.get(Instance, instance_id)
            if row is not None:
                row.config = {**(row.config or {}), "short_id": short_id}

    # -- containers ------------------------------------------------------------------------------
    def create_container(self, ctx: RequestContext, req: containers.ContainerRequest) -> tuple[str, str]:
        """Check the request, the image and the host ports, claim name and IP, then create and
        start the container in an operation. Returns (instance id, operation id)."""
        containers.validate(req, self.settings)
        driver = self.container_engine()
        with self.sessions() as s:
            try:  # no implicit pulls: a missing (or another workspace's) image is the caller's mistake
                container_images.usable_image(s, driver, ctx, req.image)
            except NotFound:
                raise Invalid(
                    f"image {req.image!r} is not on the container host; pull or build it first",
                    code="unknown_image",
                ) from None
        config = containers.to_config(req)
        with transaction(self.sessions) as s:
            net = self._active_network(s, ctx, req.network)
            self._check_host_ports(s, ctx, req.ports)
            quotas.claim(
                s,
                ctx.workspace_id,
                instances=1,
                vcpus=math.ceil(req.cpus or 0),
                memory_mb=req.memory or 0,
                ips=1,
            )
            row = Instance(
                workspace_id=ctx.workspace_id,
                name=req.name,
                kind="container",
                state=State.PENDING,
                network_id=net.id,
                cpus=math.ceil(req.cpus or 0),
                memory_mb=req.memory or 0,
                disk_gb=0,
                hostname=req.hostname or req.name,
                ssh_keys=[],
                config=config,
            )
            alloc, op = self.claim(s, ctx, row, net)
            spec = InstanceSpec(
                id=row.id,
                name=row.name,
                workspace_id=ctx.workspace_id,
                cpus=row.cpus,
                memory_mb=row.memory_mb,
                disk_gb=0,
                image_path=None,
                image_format=None,
                hostname=row.hostname,
                nics=(NicSpec(net.backend_name, alloc.mac, alloc.address),),
                container=containers.to_spec(config, network_spec(s, net)),
            )
            instance_id = row.id
        self.publish(instance_id)
        self.ops.launch(
            op, lambda octx: self.provision(octx, spec), finally_=lambda: self.unlock(instance_id)
        )
        return instance_id, op.id

    def _check_host_ports(
        self, session: Session, ctx: RequestContext, ports: tuple[containers.PortRequest, ...]
    ) -> None:
        """A host port another cloudlet container maps, or that something on the host holds now,
        is refused before anything is made (the engine would only say so at start). Host ports
        are host-wide: a container of another workspace holding one is not named."""
        if not ports:
            return
        wanted = {(p.host, p.protocol) for p in ports}
        for name, workspace_id, config in session.execute(
            select(Instance.name, Instance.workspace_id, Instance.config).where(Instance.kind == "container")
        ):
            for p in (config or {}).get("ports") or []:
                if (p["host"], p["protocol"]) in wanted:
                    holder = (
                        f"container {name!r}" if workspace_id == ctx.workspace_id else "another container"
                    )
                    raise Conflict(
                        f"host port {p['host']}/{p['protocol']} is already mapped by {holder}",
                        code="port_in_use",
                    )
        for p in self.container_engine().ports_in_use([containers.port_spec(p) for p in ports]):
            raise Conflict(f"host port {p.host}/{p.protocol} is in use on the host", code="port_in_use")

    def _reserve(self, octx: OperationContext, network: str, host: DhcpHost) -> None:
        octx.retry(lambda: self.network_driver.add_dhcp_host(network, host))
        octx.on_undo("release DHCP entry", lambda: self.network_driver.remove_dhcp_host(network, host.mac))

    # -- actions ---------------------------------------------------------------------------------
    def action(
        self, ctx: RequestContext, ref: str, action: str, *, force: bool = False, signal: str = "SIGKILL"
    ) -> str:
        """start | stop | force-stop | reboot | restart | kill | pause | resume | delete, as an
        operation under the instance's lock."""
        with transaction(self.sessions) as s:
            row = self.get(s, ctx, ref)
            check_action(action, row.state)
            if action == "delete" and row.state in (State.RUNNING, State.PAUSED) and not force:
                raise Conflict(
                    f"instance {row.name!r} is {row.state}: stop it first or delete with force",
                    code="instance_running",
                )
            op = self.locked_operation(s, ctx, row, f"instance.{action}", _transitional(action, row.state))
            instance_id, kind = row.id, row.kind
        driver = self.driver(kind)
        self.publish(instance_id)
        steps: dict[str, Callable[[OperationContext], None]] = {
            "start": lambda octx: self._start(octx, driver, instance_id),
            "stop": lambda octx: self._stop(octx, driver, instance_id, force=False),
            "force-stop": lambda octx: self._stop(octx, driver, instance_id, force=True),
            "reboot": lambda octx: self._restart(octx, driver, instance_id),
            "restart": lambda octx: self._restart(octx, driver, instance_id),
            "kill": lambda octx: self._kill(octx, driver, instance_id, signal),
            "pause": lambda octx: self._pause(octx, driver, instance_id, True),
            "resume": lambda octx: self._pause(octx, driver, instance_id, False),
            "delete": lambda octx: self._delete(octx, driver, instance_id),
        }
        step = steps[action]
        self.ops.launch(op, step, finally_=lambda: self.unlock(instance_id))
        return op.id

    def rename(self, ctx: RequestContext, ref: str, name: str) -> str:
        """Give an instance a new name (unique in the workspace); its id, address and guest
        hostname stay. A pool member's cached name follows. Returns the instance id."""
        check_vm_name(name, what="instance name")  # the widest rule: what fails it fails for any kind
        with transaction(self.sessions) as s:
            row = self.get(s, ctx, ref)
            if row.kind != "vm":
                check_name(name, what="container name")
            if row.locked_by is not None:
                raise Conflict(f"instance {row.name!r} is busy with another operation", code="instance_busy")
            if row.state in (State.PENDING, State.PROVISIONING, State.DELETING):
                raise Conflict(f"instance {row.name!r} is {row.state}", code="invalid_state")
            if row.name == name:
                return row.id
            row.name = name
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"an instance named {name!r} exists", code="name_taken") from None
            s.execute(update(PoolMember).where(PoolMember.instance_id == row.id).values(name=name))
            instance_id, kind = row.id, row.kind
            # The backend's label is changed inside the transaction: if it fails, the name stays.
            self.driver(kind).rename(instance_id, name)
        self.publish(instance_id)
        return instance_id

    def locked_operation(
        self, session: Session, ctx: RequestContext, row: Instance, kind: str, state: str
    ) -> Operation:
        """Record an operation on ``row`` that holds its lock (409 while another one does)."""
        op = self.ops.record(session, ctx, kind, "instance", row.id)
        self.lock(session, row, op.id, state)
        return op

    @staticmethod
    def lock(session: Session, row: Instance, op_id: str, state: str) -> None:
        """Give ``row``'s lock to operation ``op_id`` and set its state; 409 while another holds it."""
        claimed = session.execute(  # type: ignore[attr-defined]
            update(Instance)
            .where(Instance.id == row.id, Instance.locked_by.is_(None))
            .values(locked_by=op_id, state=state)
        ).rowcount
        if claimed != 1:
            raise Conflict(f"instance {row.name!r} is busy with another operation", code="instance_busy")

    def resize(
        self,
        ctx: RequestContext,
        ref: str,
        *,
        cpus: int | None = None,
        memory: int | None = None,
        disk: int | None = None,
    ) -> str:
        """Change a VM's vCPUs and memory (more also while it runs, plugged in up to the room its
        definition leaves; less while it is stopped) and grow its disk (also while it runs), as an
        operation. What grows is claimed against the workspace's quota at once, in
        the same transaction as the new size, so parallel requests cannot pass it together."""
        with transaction(self.sessions) as s:
            row = self.get_vm(s, ctx, ref, "are resized")
            new_cpus, new_memory, new_disk = cpus or row.cpus, memory or row.memory_mb, disk or row.disk_gb
            if (new_cpus, new_memory, new_disk) == (row.cpus, row.memory_mb, row.disk_gb):
                raise Invalid("the VM already has this size", code="same_size")
            check_size(new_cpus, new_memory, new_disk)
            if new_disk < row.disk_gb:
                raise Invalid(f"disks only grow: {row.name!r} has {row.disk_gb} GiB", code="disk_shrink")
            image = s.get(Image, row.image_id) if row.image_id else None
            if image is not None and new_memory < row.memory_mb:  # the image's minimums still hold
                check_fits(image, new_disk, new_memory)
            cold = new_memory < row.memory_mb or new_cpus < row.cpus  # growth is plugged in live
            if row.state not in (State.STOPPED, State.RUNNING) or (cold and row.state != State.STOPPED):
                raise Conflict(
                    f"instance {row.name!r} is {row.state}: memory and vCPUs shrink while it is stopped"
                    if cold
                    else f"instance {row.name!r} is {row.state}",
                    code="instance_running" if row.state == State.RUNNING else "invalid_state",
                )
            quotas.claim(
                s,
                ctx.workspace_id,
                vcpus=max(0, new_cpus - row.cpus),
                memory_mb=max(0, new_memory - row.memory_mb),
                disk_gb=new_disk - row.disk_gb,
            )
            op = self.locked_operation(s, ctx, row, "instance.resize", row.state)
            old = {"cpus": row.cpus, "memory_mb": row.memory_mb, "disk_gb": row.disk_gb}
            row.cpus, row.memory_mb, row.disk_gb = new_cpus, new_memory, new_disk
            instance_id = row.id
            change = {
                "cpus": new_cpus if new_cpus != old["cpus"] else None,
                "memory_mb": new_memory if new_memory != old["memory_mb"] else None,
                "disk_gb": new_disk if new_disk != old["disk_gb"] else None,
            }

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.on_undo("restore the recorded size", lambda: self._set_size(instance_id, old))
            self.compute.resize(instance_id, **change)
            return {"cpus": new_cpus, "memory_mb": new_memory, "disk_gb": new_disk}

        self.publish(instance_id)
        self.ops.launch(op, step, finally_=lambda: self.unlock(instance_id))
        return op.id

    def _set_size(self, instance_id: str, size: dict[str, int]) -> None:
        with transaction(self.sessions) as s:
            s.execute(update(Instance).where(Instance.id == instance_id).values(**size))

    def _start(self, octx: OperationContext, driver: ComputeDriver, instance_id: str) -> None:
        self._check_base_image(instance_id)
        octx.retry(lambda: driver.start(instance_id))
        self._set_state(instance_id, State.RUNNING, error=None)

    def _check_base_image(self, instance_id: str) -> None:
        """A VM's image is checked again each time QEMU opens it anew (a cold start): VMs made
        before images were checked may stand on one that names host files (422 ``unsafe_image``)."""
        with self.sessions() as s:
            row = s.get(Instance, instance_id)
            image = s.get(Image, row.image_id) if row is not None and row.image_id else None
            if row is None or row.kind != "vm" or image is None or not image.path or not image.format:
                return
            path, fmt = Path(image.path), image.format
        check_image_file(path, fmt)

    def _stop(self, octx: OperationContext, driver: ComputeDriver, instance_id: str, *, force: bool) -> None:
        try:
            octx.retry(lambda: driver.stop(instance_id, force=force, timeout=self.settings.stop_timeout))
        except Exception:
            self.resync_one(instance_id)
            raise
        self._set_state(instance_id, State.STOPPED)

    def _restart(self, octx: OperationContext, driver: ComputeDriver, instance_id: str) -> None:
        try:
            octx.retry(lambda: driver.reboot(instance_id))
        finally:
            self.resync_one(instance_id)

    def _kill(self, octx: OperationContext, driver: ComputeDriver, instance_id: str, signal: str) -> None:
        try:
            if isinstance(driver, ContainerDriver):
                octx.retry(lambda: driver.kill(instance_id, signal))
            else:  # a VM has no process to signal: killing it is pulling the plug
                octx.retry(lambda: driver.stop(instance_id, force=True))
        finally:
            self.resync_one(instance_id)

    def _pause(self, octx: OperationContext, driver: ComputeDriver, instance_id: str, pause: bool) -> None:
        try:
            octx.retry(lambda: driver.pause(instance_id) if pause else driver.resume(instance_id))
        finally:
            self.resync_one(instance_id)

    def _delete(self, octx: OperationContext, driver: ComputeDriver, instance_id: str) -> None:
        try:
            octx.retry(lambda: driver.delete(instance_id))
        except Exception:
            self.resync_one(instance_id)  # not stuck in "deleting": back to what the backend says
            raise
        for backend, mac in self.networks.release(instance_id):
            self._release_dhcp(octx, backend, mac)
        self._forget(instance_id)

    def _release_dhcp(self, octx: OperationContext, backend: str, mac: str) -> None:
        octx.retry(lambda: self.network_driver.remove_dhcp_host(backend, mac))

    # -- state bookkeeping -----------------------------------------------------------------------
    def _set_state(self, instance_id: str, state: State, **values: Any) -> None:
        with transaction(self.sessions) as s:
            s.execute(update(Instance).where(Instance.id == instance_id).values(state=state, **values))
        self.publish(instance_id)

    def resync_one(self, instance_id: str) -> None:
        with self.sessions() as s:
            kind = s.scalar(select(Instance.kind).where(Instance.id == instance_id))
        if kind is None:
            return
        try:
            power = self.driver(kind).state(instance_id)
        except NotFound:
            self._set_state(instance_id, State.ERROR, error="the backend no longer has this instance")
            return
        self._set_state(instance_id, FROM_POWER.get(power, State.ERROR))

    def unlock(self, instance_id: str) -> None:
        with transaction(self.sessions) as s:
            s.execute(update(Instance).where(Instance.id == instance_id).values(locked_by=None))

    def _forget(self, instance_id: str) -> None:
        """Drop the instance row and its IP allocations (its backend objects are gone by now)."""
        with transaction(self.sessions) as s:
            row = s.get(Instance, instance_id)
            if row is None:
                return
            workspace_id, name = row.workspace_id, row.name
            for alloc in s.scalars(select(IPAllocation).where(IPAllocation.instance_id == instance_id)):
                s.delete(alloc)
            s.execute(delete(Snapshot).where(Snapshot.instance_id == instance_id))  # went with its disk
            # Its volumes went with its definition, not with its disk: they stay, detached.
            s.execute(
                update(Volume).where(Volume.instance_id == instance_id).values(instance_id=None, target=None)
            )
            s.execute(delete(ConsoleTicket).where(ConsoleTicket.instance_id == instance_id))
            s.delete(row)
        self.bus.publish(Event("instance.deleted", workspace_id, {"id": instance_id, "name": name}))

    def publish(self, instance_id: str) -> None:
        with self.sessions() as s:
            row = s.get(Instance, instance_id)
            if row is not None:
                self.bus.publish(
                    Event(
                        "instance.updated",
                        row.workspace_id,
                        {"id": row.id, "name": row.name, "state": row.state},
                    )
                )


def _taken(session: Session, row: Instance) -> Conflict:
    """Why ``row`` could not be inserted: its name is taken, or the hostname it derives is."""
    in_ws = Instance.workspace_id == row.workspace_id
    if (
        row.dns_name is not None
        and session.scalar(select(Instance.id).where(in_ws, Instance.name == row.name)) is None
    ):
        holder = session.scalar(select(Instance.name).where(in_ws, Instance.dns_name == row.dns_name))
        if holder is not None:
            return Conflict(
                f"the name {row.name!r} gives the hostname {row.dns_name!r}, which instance {holder!r} "
                "already has: choose another name, or give a hostname of its own",
                code="hostname_taken",
                hostname=row.dns_name,
                holder=holder,
            )
    return Conflict(f"an instance named {row.name!r} exists", code="name_taken")


def _transitional(action: str, state: str) -> str:
    return {"stop": State.STOPPING, "force-stop": State.STOPPING, "delete": State.DELETING}.get(action, state)


def lookup_ref(session: Session, model: type[Any], ctx: RequestContext, ref: str, what: str) -> Any:
    """A resource named in a request body: unknown is a 422 (the body is wrong), not a 404."""
    try:
        return lookup(session, model, ctx.workspace_id, ref, what)
    except NotFound as err:
        raise Invalid(err.detail, code=f"unknown_{what}") from None
