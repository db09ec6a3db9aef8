"""Networks and IP address management. Addresses live in the database: each allocation is a row
under a unique (network, address) constraint, so two concurrent creates can never get the same IP;
the backend's DHCP server only learns the MAC-to-IP pairs that IPAM decided."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudlet.db.models import Instance, IPAllocation, Network
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.drivers.base import DhcpHost, NetworkDriver, NetworkSpec
from cloudlet.drivers.containers import ContainerDriver
from cloudlet.errors import Conflict, Exhausted, InUse, Invalid
from cloudlet.services import quotas
from cloudlet.services.context import RequestContext
from cloudlet.services.names import check_name, lookup
from cloudlet.services.operations import OperationContext, Operations

MODES = ("nat", "isolated")


def parse_cidr(cidr: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as err:
        raise Invalid(f"invalid cidr {cidr!r}: {err}", code="invalid_cidr") from None
    if not isinstance(net, ipaddress.IPv4Network) or not net.is_private:
        raise Invalid(f"cidr {cidr!r} must be a private IPv4 network", code="invalid_cidr")
    if not 16 <= net.prefixlen <= 29:
        raise Invalid(f"cidr {cidr!r} must have a prefix length between /16 and /29", code="invalid_cidr")
    return net


def usable_addresses(net: Network) -> list[str]:
    """Addresses IPAM may hand out: all hosts but the gateway and the DHCP spare (the last host)."""
    hosts = list(ipaddress.ip_network(net.cidr).hosts())
    return [str(a) for a in hosts[:-1] if str(a) != net.gateway]


def instance_nics(session: Session, instance_ids: list[str]) -> dict[str, list[tuple[IPAllocation, Network]]]:
    """Each instance's addresses with their networks, in NIC order: the primary one (on the
    instance's own network) first, then the others as they were made."""
    rows = session.execute(
        select(IPAllocation, Network, Instance.network_id)
        .join(Network, Network.id == IPAllocation.network_id)
        .join(Instance, Instance.id == IPAllocation.instance_id)
        .where(IPAllocation.instance_id.in_(instance_ids))
        .order_by(IPAllocation.created_at, IPAllocation.id)
    ).all()
    found: dict[str, list[tuple[IPAllocation, Network]]] = {}
    for alloc, net, _ in sorted(rows, key=lambda r: r[1].id != r[2]):  # stable: keeps made order
        found.setdefault(alloc.instance_id or "", []).append((alloc, net))
    return found


def is_usable(net: Network, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is one of :func:`usable_addresses`, without listing them."""
    network = ipaddress.ip_network(net.cidr)
    if address not in network or str(address) == net.gateway:
        return False
    if network.num_addresses <= 2:
        return False
    return int(network.network_address) < int(address) < int(network.broadcast_address) - 1


def network_spec(session: Session, net: Network) -> NetworkSpec:
    rows = session.execute(
        select(IPAllocation, Instance.hostname)
        .join(Instance, Instance.id == IPAllocation.instance_id, isouter=True)
        .where(IPAllocation.network_id == net.id)
    ).all()
    hosts = tuple(DhcpHost(a.mac, a.address, hostname or "") for a, hostname in rows)
    return NetworkSpec(net.backend_name, net.bridge, net.cidr, net.gateway, net.mode, hosts)


def mac_for(address: str) -> str:
    """The MAC of whoever holds ``address``: always the same for one address. dnsmasq keeps a
    lease for an hour after a VM is gone; a new VM given the same address with another MAC would
    be refused (DHCP NAK) until then, while with the same MAC it gets the lease at once.

    All four bytes of the address follow the locally administered prefix 52:54, so MACs are as
    unique as addresses: networks never overlap, so a VM's NICs on several networks never share
    one (the last three bytes alone clashed for 10.16.0.5 and 172.16.0.5, and network-config
    matches NICs by MAC)."""
    return "52:54:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def _overlap(cidr: str, other: Network, workspace_id: str) -> Conflict:
    """Address ranges are host-wide, so a clash with another workspace's network is reported
    without naming it or its range: those are that workspace's business."""
    if other.workspace_id == workspace_id:
        return Conflict(f"{cidr} overlaps network {other.name!r} ({other.cidr})", code="cidr_overlap")
    return Conflict(
        f"{cidr} overlaps an address range already in use on this host; pick another", code="cidr_overlap"
    )


class Networks:
    def __init__(
        self,
        sessions: SessionFactory,
        ops: Operations,
        driver: NetworkDriver,
        containers: ContainerDriver | None = None,
    ) -> None:
        self.containers = containers  # told when a network goes, to drop its container side
        self.sessions = sessions
        self.ops = ops
        self.driver = driver

    def get(self, session: Session, ctx: RequestContext, ref: str) -> Network:
        return lookup(session, Network, ctx.workspace_id, ref, "network")

    def all(self, session: Session, ctx: RequestContext) -> list[Network]:
        return list(
            session.scalars(
                select(Network).where(Network.workspace_id == ctx.workspace_id).order_by(Network.name)
            )
        )

    def usage(self, session: Session, net: Network) -> dict[str, int]:
        used = session.scalar(select(func.count()).where(IPAllocation.network_id == net.id)) or 0
        return {"total": len(usable_addresses(net)), "used": used}

    def _new_row(self, session: Session, ctx: RequestContext, name: str, cidr: str, mode: str) -> Network:
        check_name(name, what="network name")
        if mode not in MODES:
            raise Invalid(f"invalid mode {mode!r}: choose one of {', '.join(MODES)}", code="invalid_mode")
        net = parse_cidr(cidr)
        quotas.claim(session, ctx.workspace_id, networks=1)
        for other in session.scalars(select(Network)):
            if ipaddress.ip_network(other.cidr).overlaps(net):
                raise _overlap(cidr, other, ctx.workspace_id)
        if session.scalar(
            select(Network.id).where(Network.workspace_id == ctx.workspace_id, Network.name == name)
        ):
            raise Conflict(f"a network named {name!r} exists", code="name_taken")
        short = uuid.uuid4().hex[:10]
        row = Network(
            workspace_id=ctx.workspace_id,
            name=name,
            cidr=str(net),
            mode=mode,
            gateway=str(next(net.hosts())),
            bridge=f"clbr{short[:8]}",
            backend_name=f"cloudlet-{short}",
            status="creating",
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(f"network {name!r} or its cidr {cidr} is taken", code="name_taken") from None
        return row

    def create(self, ctx: RequestContext, name: str, cidr: str, mode: str = "nat") -> str:
        """Record the network and start an operation that makes it on the backend; returns the op id."""
        with transaction(self.sessions) as s:
            row = self._new_row(s, ctx, name, cidr, mode)
            op = self.ops.record(s, ctx, "network.create", "network", row.id)
            spec = network_spec(s, row)
            net_id = row.id

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.on_undo("forget network", lambda: self._delete_row(net_id))
            octx.on_undo("remove backend network", lambda: self.driver.delete_network(spec.backend_name))
            octx.retry(lambda: self.driver.ensure_network(spec))
            self._set_status(net_id, "active")
            return {"network_id": net_id}

        self.ops.launch(op, step)
        return op.id

    def create_now(self, ctx: RequestContext, name: str, cidr: str, mode: str = "nat") -> Network:
        """Create synchronously (start-up's default network): no operation, same checks and clean-up."""
        with transaction(self.sessions) as s:
            row = self._new_row(s, ctx, name, cidr, mode)
            spec = network_spec(s, row)
        try:
            self.driver.ensure_network(spec)
        except Exception:
            self._delete_row(row.id)
            raise
        self._set_status(row.id, "active")
        row.status = "active"
        return row

    def delete(self, ctx: RequestContext, ref: str) -> str:
        with transaction(self.sessions) as s:
            row = self.get(s, ctx, ref)
            in_use = (  # a VM's second NIC counts as much as its first
                s.scalar(
                    select(func.count(func.distinct(IPAllocation.instance_id))).where(
                        IPAllocation.network_id == row.id, IPAllocation.instance_id.is_not(None)
                    )
                )
                or 0
            )
            if in_use:
                raise InUse(f"network {row.name!r} is used by {in_use} instance(s)", code="network_in_use")
            row.status = "deleting"
            op = self.ops.record(s, ctx, "network.delete", "network", row.id)
            backend, net_id = row.backend_name, row.id

        def step(octx: OperationContext) -> None:
            octx.on_undo("keep network", lambda: self._set_status(net_id, "active"))
            if self.containers is not None:
                containers = self.containers
                octx.retry(lambda: containers.detach_network(backend))
            octx.retry(lambda: self.driver.delete_network(backend))
            self._delete_row(net_id)

        self.ops.launch(op, step)
        return op.id

    def _set_status(self, net_id: str, status: str) -> None:
        with transaction(self.sessions) as s:
            row = s.get(Network, net_id)
            if row is not None:
                row.status = status

    def _delete_row(self, net_id: str) -> None:
        with transaction(self.sessions) as s:
            row = s.get(Network, net_id)
            if row is not None:
                s.delete(row)

    # -- IPAM ------------------------------------------------------------------------------------
    def allocate(
        self, session: Session, net: Network, instance_id: str, *, address: str | None = None
    ) -> IPAllocation:
        """Claim ``address``, or the lowest free one, with a fresh MAC inside the caller's transaction."""
        if address is not None:
            return self._allocate_chosen(session, net, instance_id, address)
        used = set(session.scalars(select(IPAllocation.address).where(IPAllocation.network_id == net.id)))
        for candidate in usable_addresses(net):
            if candidate in used:
                continue
            try:
                return self._insert(session, net, instance_id, candidate)
            except IntegrityError:
                continue  # another request took this address (or MAC) a moment ago: try the next
        raise Exhausted(f"network {net.name!r} ({net.cidr}) has no free address", code="network_exhausted")

    def _allocate_chosen(
        self, session: Session, net: Network, instance_id: str, address: str
    ) -> IPAllocation:
        try:
            chosen = ipaddress.ip_address(address)
        except ValueError:
            raise Invalid(f"{address!r} is not an IP address", code="invalid_ip") from None
        if not is_usable(net, chosen):
            raise Invalid(
                f"{address} is not an address IPAM hands out on network {net.name!r} ({net.cidr}: "
                "not its network, broadcast, gateway or DHCP spare address)",
                code="invalid_ip",
            )
        try:
            return self._insert(session, net, instance_id, str(chosen))
        except IntegrityError:
            raise Conflict(f"{chosen} is taken on network {net.name!r}", code="ip_taken") from None

    @staticmethod
    def _insert(session: Session, net: Network, instance_id: str, address: str) -> IPAllocation:
        alloc = IPAllocation(
            network_id=net.id, address=address, mac=mac_for(address), instance_id=instance_id
        )
        with session.begin_nested():
            session.add(alloc)
        return alloc

    def release(self, instance_id: str) -> list[tuple[str, str]]:
        """Free an instance's addresses; returns (backend network, mac) pairs to drop from DHCP."""
        with transaction(self.sessions) as s:
            rows = s.execute(
                select(IPAllocation, Network.backend_name)
                .join(Network, Network.id == IPAllocation.network_id)
                .where(IPAllocation.instance_id == instance_id)
            ).all()
            for alloc, _ in rows:
                s.delete(alloc)
            return [(backend, alloc.mac) for alloc, backend in rows]
