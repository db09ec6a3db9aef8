"""What a VM's cloud-init seed says, built from a create request: the user-data (the caller's own
cloud-config or script, merged with guest users, passwords and SSH keys) and the network config
(static addresses written into the guest instead of DHCP).

Everything is built as data and dumped with a YAML or MIME library; no user text is pasted into a
document. Plain passwords are hashed here (SHA-512 crypt, what every cloud-init distro reads) and
never stored or written anywhere in the clear.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import yaml

from cloudlet.errors import Invalid

MAX_USER_DATA = 64 * 1024  # what fits a NoCloud seed comfortably; cloud providers allow 16-64 KiB
MAX_USERS = 32
# POSIX portable user names, as useradd accepts them by default.
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# crypt(3) hashes cloud-init can set: SHA-512, SHA-256, yescrypt, bcrypt. MD5 and DES are refused.
_PASSWORD_HASH = re.compile(
    r"\$(6|5)\$(rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{43,86}"
    r"|\$y\$[./A-Za-z0-9$]{20,200}"
    r"|\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}"
)
_SHELL = re.compile(r"/[A-Za-z0-9_./-]{1,127}")
_GROUP = _USER_NAME
# The first line tells cloud-init what a user-data part is (its "mime type by header").
_PART_TYPES = {
    "#cloud-config": "cloud-config",
    "#!": "x-shellscript",
    "#include": "x-include-url",
    "#cloud-boothook": "cloud-boothook",
    "#part-handler": "part-handler",
}


@dataclass(frozen=True)
class GuestUser:
    """A user cloud-init creates in the guest. ``password`` is plain text from the request and is
    replaced by its hash in :func:`check_users`; ``password_hash`` is a crypt(3) hash."""

    name: str
    password: str | None = None
    password_hash: str | None = None
    ssh_keys: tuple[str, ...] = ()
    sudo: bool = False
    shell: str | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class StaticNic:
    """One NIC's static configuration: ``address`` with its prefix, e.g. "10.0.0.5/24"."""

    mac: str
    address: str
    gateway: str | None = None  # the default route goes through the first NIC that has one
    nameservers: tuple[str, ...] = ()


def _bad_user(detail: str) -> Invalid:
    return Invalid(detail, code="invalid_user")


def hash_password(password: str) -> str:
    """A SHA-512 crypt hash of ``password`` (``$6$rounds=...``), as ``chpasswd``/cloud-init set it."""
    from passlib.hash import sha512_crypt  # imported on use: an idle server need not hold it

    digest: str = sha512_crypt.hash(password)
    return digest


def check_users(users: Sequence[GuestUser], check_key: Any) -> tuple[GuestUser, ...]:
    """Validate guest users and hash plain passwords; ``check_key`` normalizes one SSH key."""
    if len(users) > MAX_USERS:
        raise _bad_user(f"at most {MAX_USERS} users")
    seen: set[str] = set()
    out = []
    for user in users:
        if not _USER_NAME.fullmatch(user.name):
            raise _bad_user(f"invalid user name {user.name!r}: use a-z, 0-9, '_' or '-', at most 32")
        if user.name in seen:
            raise _bad_user(f"user {user.name!r} is given twice")
        seen.add(user.name)
        if user.password is not None and user.password_hash is not None:
            raise _bad_user(f"user {user.name!r}: give password or password_hash, not both")
        digest = user.password_hash
        if user.password is not None:
            if not 1 <= len(user.password) <= 256 or any(ord(c) < 32 or ord(c) == 127 for c in user.password):
                raise _bad_user(f"user {user.name!r}: a password is 1-256 characters, no control characters")
            digest = hash_password(user.password)
        elif digest is not None and not _PASSWORD_HASH.fullmatch(digest):
            raise _bad_user(
                f"user {user.name!r}: password_hash must be a SHA-512, SHA-256, yescrypt or bcrypt "
                "crypt(3) hash (e.g. from `mkpasswd -m sha-512`)"
            )
        if user.shell is not None and not _SHELL.fullmatch(user.shell):
            raise _bad_user(f"user {user.name!r}: shell must be an absolute path")
        for group in user.groups:
            if not _GROUP.fullmatch(group):
                raise _bad_user(f"user {user.name!r}: invalid group name {group!r}")
        out.append(
            GuestUser(
                name=user.name,
                password_hash=digest,
                ssh_keys=tuple(check_key(k) for k in user.ssh_keys),
                sudo=user.sudo,
                shell=user.shell,
                groups=tuple(user.groups),
            )
        )
    return tuple(out)


def part_type(user_data: str) -> str:
    """The MIME subtype cloud-init gives user-data by its first line; a clear error for anything
    cloud-init would silently ignore."""
    if user_data.startswith("Content-Type:"):
        return "mime"
    for header, kind in _PART_TYPES.items():
        if user_data.startswith(header):
            return kind
    raise Invalid(
        "user_data must start with #cloud-config, #! (a script), #include, #cloud-boothook, "
        "#part-handler or be a MIME multipart document",
        code="invalid_user_data",
    )


def check_user_data(user_data: str) -> dict[str, Any] | None:
    """Validate user-data; returns the parsed mapping when it is a #cloud-config."""
    if len(user_data.encode()) > MAX_USER_DATA:
        raise Invalid(f"user_data is limited to {MAX_USER_DATA} bytes", code="invalid_user_data")
    if part_type(user_data) != "cloud-config":
        return None
    try:
        parsed = yaml.safe_load(user_data)
    except yaml.YAMLError as err:
        raise Invalid(f"user_data is not valid YAML: {err}", code="invalid_user_data") from None
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise Invalid("a #cloud-config must be a YAML mapping", code="invalid_user_data")
    return parsed


def _user_entry(user: GuestUser) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": user.name}
    if user.password_hash:
        entry["lock_passwd"] = False
        entry["hashed_passwd"] = user.password_hash
    if user.ssh_keys:
        entry["ssh_authorized_keys"] = list(user.ssh_keys)
    if user.sudo:
        entry["sudo"] = "ALL=(ALL) NOPASSWD:ALL"
    if user.shell:
        entry["shell"] = user.shell
    if user.groups:
        entry["groups"] = list(user.groups)
    return entry


def _dump(document: dict[str, Any], header: str) -> str:
    # width: long SSH keys stay on one line; sort_keys off keeps the caller's order.
    body = yaml.safe_dump(document, sort_keys=False, width=1 << 16, allow_unicode=True)
    return f"{header}\n{body}"


def compose_user_data(
    *,
    hostname: str,
    ssh_keys: Sequence[str],
    users: Sequence[GuestUser] = (),
    user_data: str | None = None,
    ssh_password_auth: bool = False,
) -> str | None:
    """The user-data for the seed, or None when the default one (hostname and root's keys) will do.

    A caller's #cloud-config is merged with the request: ``users`` and ``ssh_authorized_keys`` lists
    are joined (the request's first), any other key the caller wrote wins over the request's. A
    script or other single part is sent as is when the request adds nothing it cannot carry; with
    users it becomes the second part of a MIME multipart document after a generated #cloud-config.
    """
    if user_data is None and not users and not ssh_password_auth:
        return None
    ours: dict[str, Any] = {"hostname": hostname}
    if ssh_keys:
        ours["ssh_authorized_keys"] = list(ssh_keys)
    if users:  # "default" keeps the image's own user (debian, ubuntu...) beside the new ones
        ours["users"] = ["default", *(_user_entry(u) for u in users)]
    if ssh_password_auth:
        ours["ssh_pwauth"] = True
    if user_data is None:
        return _dump(ours, "#cloud-config")
    theirs = check_user_data(user_data)
    if theirs is not None:
        merged = dict(ours)
        for key, value in theirs.items():
            if key in ("users", "ssh_authorized_keys") and isinstance(value, list) and key in ours:
                merged[key] = ours[key] + [v for v in value if v not in ours[key]]
            else:
                merged[key] = value
        return _dump(merged, "#cloud-config")
    if not users and not ssh_password_auth:
        return user_data  # hostname and keys reach the guest through meta-data
    kind = part_type(user_data)
    if kind == "mime":
        raise Invalid(
            "users and ssh_password_auth cannot be merged into MIME user_data: put them in its "
            "#cloud-config part",
            code="invalid_user_data",
        )
    document = MIMEMultipart()
    for text, subtype in ((_dump(ours, "#cloud-config"), "cloud-config"), (user_data, kind)):
        document.attach(MIMEText(text, subtype, "utf-8"))
    return document.as_string()


def check_network_config(config: dict[str, Any]) -> str:
    """A caller's own network config (cloud-init's version 1 or 2 format), dumped as YAML."""
    inner = config.get("network", config)
    if not isinstance(inner, dict) or inner.get("version") not in (1, 2):
        raise Invalid(
            "network_config must be a cloud-init network config with version 1 or 2",
            code="invalid_network_config",
        )
    return _dump(config, "# network-config from the create request")


def check_nameservers(nameservers: Sequence[str]) -> tuple[str, ...]:
    try:
        return tuple(str(ipaddress.ip_address(n)) for n in nameservers)
    except ValueError as err:
        raise Invalid(f"invalid nameserver: {err}", code="invalid_dns") from None


def static_network_config(nics: Sequence[StaticNic]) -> str:
    """A version 2 network config giving each NIC (matched by MAC) its address, the first gateway
    as the default route, and its nameservers."""
    ethernets: dict[str, Any] = {}
    routed = False
    for index, nic in enumerate(nics):
        entry: dict[str, Any] = {
            "match": {"macaddress": nic.mac},
            "set-name": f"eth{index}",
            "dhcp4": False,
            "addresses": [nic.address],
        }
        if nic.gateway and not routed:
            entry["routes"] = [{"to": "default", "via": nic.gateway}]
            routed = True
        if nic.nameservers:
            entry["nameservers"] = {"addresses": list(nic.nameservers)}
        ethernets[f"eth{index}"] = entry
    return _dump({"version": 2, "ethernets": ethernets}, "# static addresses from cloudlet's IPAM")
