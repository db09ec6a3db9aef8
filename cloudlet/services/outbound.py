"""Which addresses the server may contact on a user's behalf (image downloads from a URL).

A user who names a URL makes the server open a connection from inside the network: to its own
loopback services, the LAN, a cloud metadata service. So every address a request would reach is
judged here, after DNS: loopback, private, shared (CGNAT), link-local, multicast, documentation,
benchmarking, reserved and unspecified ranges are refused, and so is IPv4 hidden in IPv6
(``::ffff:a.b.c.d``, 6to4, NAT64) when the IPv4 inside is one of those. An admin opens chosen
internal sources with an allow-list of host names and networks (setting ``outbound_allow``).

The tables are written out rather than taken from ``ipaddress``'s ``is_private``/``is_global``,
whose meaning changed between Python releases and which call multicast "global".
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)


def _table(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in rows)


# IANA's special-purpose registries (RFC 6890 and successors): none of these is a public server.
REFUSED_V4 = _table(
    ("0.0.0.0/8", "this network (unspecified)"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (metadata services)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
)
REFUSED_V6 = _table(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("::/8", "reserved"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
# IPv6 forms that carry an IPv4 address the packets end up at: judged by that address.
MAPPED = ipaddress.ip_network("::ffff:0:0/96")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


def parse_address(address: str) -> IPAddress:
    """An address as ``getaddrinfo`` or a peer name gives it (an IPv6 zone ``%eth0`` dropped)."""
    return ipaddress.ip_address(address.split("%", 1)[0])


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address leads to (v4-mapped, NAT64, 6to4), and which form it is."""
    if ip in MAPPED:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-mapped"
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip in SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF), "6to4"
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why the server must not contact ``ip`` on a user's behalf; None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            why = refusal(inner[0])
            return f"{inner[1]} {inner[0]}: {why}" if why else None
        table = REFUSED_V6
    else:
        table = REFUSED_V4
    return next((why for net, why in table if ip in net), None)


def parse_allow_entry(entry: str) -> str | IPNetwork:
    """An allow-list entry: a network (``10.9.0.0/16``), an address (a one-address network), or a
    host name (lower-cased, without a final dot). ``ValueError`` for anything else."""
    text = entry.strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    name = text.lower().rstrip(".")
    if not HOST_NAME.match(name) or name.replace(".", "").isdigit():
        raise ValueError(f"not a host name, address or network: {entry!r}")
    return name


@dataclass(frozen=True)
class OutboundPolicy:
    """Addresses the server refuses to contact, minus what the admin allowed."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> OutboundPolicy:
        parsed = [parse_allow_entry(e) for e in entries]
        return cls(
            allow_hosts=frozenset(p for p in parsed if isinstance(p, str)),
            allow_networks=tuple(p for p in parsed if not isinstance(p, str)),
        )

    def refusal(self, host: str, address: str) -> str | None:
        """Why ``address`` (which ``host`` resolved to, or was) must not be contacted; None when
        it may: a public address, an allow-listed host name, or inside an allow-listed network."""
        ip = parse_address(address)
        why = refusal(ip)
        if why is None:
            return None
        if host.lower().rstrip(".") in self.allow_hosts:
            return None
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
            candidates.append(inner[0])  # "127.0.0.1" in the list also allows ::ffff:127.0.0.1
        if any(c in net for c in candidates for net in self.allow_networks if c.version == net.version):
            return None
        return why


class AddressRefused(Exception):
    """A request would reach an address the policy refuses (raised while connecting)."""

    def __init__(self, host: str, address: str, why: str) -> None:
        super().__init__(f"{host} is {address}: {why}, not in the outbound allow-list")
        self.host, self.address, self.why = host, address, why
