"""What a container run request may ask for, checked before anything is created.

The checked request is kept as the instance's ``config`` (JSON), and turned into the driver's
``ContainerSpec`` when the container is made. Host bind mounts and privileged mode give a
container the host: they are refused unless an admin setting allows them.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from cloudlet.config import Settings
from cloudlet.drivers.base import ContainerSpec, MountSpec, NetworkSpec, PortSpec
from cloudlet.errors import Forbidden, Invalid
from cloudlet.services.names import check_name

MAX_CPUS = 64.0
MAX_MEMORY_MB = 1024 * 1024
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
PROTOCOLS = ("tcp", "udp")

# Docker's reference grammar (distribution/reference), without the optional digest-only form.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REF = re.compile(
    # a registry host is only a first part with a dot or a port, or "localhost"
    r"^(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]+)?/|[a-zA-Z0-9-]+:[0-9]+/)?"
    rf"{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?$"
)
IMAGE_ID = re.compile(r"^(?:sha256:)?[a-f0-9]{12,64}$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class PortRequest:
    host: int
    container: int
    protocol: str = "tcp"
    host_ip: str = ""


@dataclass(frozen=True)
class VolumeRequest:
    """``name`` is a cloudlet-managed volume; ``host_path`` (admins' setting only) a host folder."""

    path: str
    name: str | None = None
    host_path: str | None = None
    read_only: bool = False


@dataclass(frozen=True)
class ContainerRequest:
    name: str
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[PortRequest, ...] = ()
    volumes: tuple[VolumeRequest, ...] = ()
    cpus: float | None = None
    memory: int | None = None  # MiB
    restart: str = "no"
    network: str = "default"
    hostname: str | None = None
    privileged: bool = False
    workdir: str | None = None
    user: str | None = None


def check_image_ref(ref: str) -> str:
    if len(ref) > 255 or not (IMAGE_REF.fullmatch(ref) or IMAGE_ID.fullmatch(ref)):
        raise Invalid(f"invalid image reference {ref[:80]!r}", code="invalid_image_ref")
    return ref


def _check_args(args: tuple[str, ...] | None, what: str) -> None:
    if args is None:
        return
    if len(args) > 256 or any(len(a) > 8192 or "\x00" in a for a in args):
        raise Invalid(f"{what}: at most 256 arguments of 8 KiB, without NUL bytes", code="invalid_command")


def _check_env(env: dict[str, str]) -> None:
    if len(env) > 256:
        raise Invalid("at most 256 environment variables", code="invalid_env")
    for key, value in env.items():
        if not ENV_KEY.fullmatch(key) or len(key) > 256:
            raise Invalid(f"invalid environment variable name {key[:60]!r}", code="invalid_env")
        if "\x00" in value or len(value) > 32768:
            raise Invalid(f"invalid value for environment variable {key!r}", code="invalid_env")


def _check_ports(ports: tuple[PortRequest, ...]) -> None:
    seen: set[tuple[str, int, str]] = set()
    for p in ports:
        for number, what in ((p.host, "host"), (p.container, "container")):
            if not 1 <= number <= 65535:
                raise Invalid(f"{what} port {number} is not between 1 and 65535", code="invalid_port")
        if p.protocol not in PROTOCOLS:
            raise Invalid(f"protocol {p.protocol!r}: use tcp or udp", code="invalid_port")
        if p.host_ip:
            try:
                ipaddress.ip_address(p.host_ip)
            except ValueError:
                raise Invalid(f"host_ip {p.host_ip!r} is not an IP address", code="invalid_port") from None
        key = (p.host_ip, p.host, p.protocol)
        if key in seen:
            raise Invalid(f"host port {p.host}/{p.protocol} is mapped twice", code="invalid_port")
        seen.add(key)


def _check_target(path: str) -> str:
    normal = posixpath.normpath(path)
    if not path.startswith("/") or normal == "/" or ".." in path.split("/") or "\x00" in path:
        raise Invalid(
            f"mount path {path[:80]!r} must be an absolute folder other than /", code="invalid_volume"
        )
    return normal


def _check_volumes(volumes: tuple[VolumeRequest, ...], settings: Settings) -> None:
    targets: set[str] = set()
    for v in volumes:
        target = _check_target(v.path)
        if target in targets:
            raise Invalid(f"two volumes are mounted at {target}", code="invalid_volume")
        targets.add(target)
        if v.host_path is not None:
            if not settings.allow_host_mounts:
                raise Forbidden(
                    f"host bind mounts ({v.host_path[:80]!r}) are disabled; an admin can allow them with "
                    "the allow_host_mounts setting. Use a named volume instead.",
                    code="host_mounts_forbidden",
                )
            if not v.host_path.startswith("/") or "\x00" in v.host_path:
                raise Invalid(f"host path {v.host_path[:80]!r} must be absolute", code="invalid_volume")
        elif v.name is None:
            raise Invalid(f"the volume at {target} needs a name", code="invalid_volume")
        else:
            check_name(v.name, what="volume name")


def validate(req: ContainerRequest, settings: Settings) -> None:
    """Raise a 422 (or a 403 for host access) naming the first thing wrong with the request."""
    check_name(req.name, what="container name")
    if req.hostname is not None:
        check_name(req.hostname, what="hostname")
    check_image_ref(req.image)
    _check_args(req.command, "command")
    _check_args(req.entrypoint, "entrypoint")
    _check_env(req.env)
    _check_ports(req.ports)
    _check_volumes(req.volumes, settings)
    if req.cpus is not None and not 0.01 <= req.cpus <= MAX_CPUS:
        raise Invalid(f"cpus must be between 0.01 and {MAX_CPUS:g}", code="invalid_size")
    if req.memory is not None and not 6 <= req.memory <= MAX_MEMORY_MB:
        raise Invalid(f"memory must be between 6 and {MAX_MEMORY_MB} MiB", code="invalid_size")
    if req.restart not in RESTART_POLICIES:
        raise Invalid(
            f"restart policy {req.restart!r}: use one of {', '.join(RESTART_POLICIES)}",
            code="invalid_restart",
        )
    if req.privileged and not settings.allow_privileged:
        raise Forbidden(
            "privileged containers are disabled; an admin can allow them with the allow_privileged setting",
            code="privileged_forbidden",
        )
    for value, what in ((req.workdir, "workdir"), (req.user, "user")):
        if value is not None and (len(value) > 256 or "\x00" in value):
            raise Invalid(f"invalid {what}", code="invalid_request")


def port_spec(p: PortRequest) -> PortSpec:
    return PortSpec(p.host, p.container, p.protocol, p.host_ip)


def to_config(req: ContainerRequest) -> dict[str, Any]:
    """The request as the instance's stored configuration."""
    config = asdict(req)
    for key in ("name", "network", "hostname"):
        config.pop(key)
    config["command"] = list(req.command) if req.command is not None else None
    config["entrypoint"] = list(req.entrypoint) if req.entrypoint is not None else None
    return config


def to_spec(config: dict[str, Any], network: NetworkSpec | None) -> ContainerSpec:
    return ContainerSpec(
        image=config["image"],
        command=tuple(config["command"]) if config.get("command") is not None else None,
        entrypoint=tuple(config["entrypoint"]) if config.get("entrypoint") is not None else None,
        env=tuple(sorted((config.get("env") or {}).items())),
        ports=tuple(
            PortSpec(p["host"], p["container"], p["protocol"], p["host_ip"]) for p in config["ports"]
        ),
        mounts=tuple(
            MountSpec(v["host_path"], v["path"], v["read_only"], bind=True)
            if v.get("host_path")
            else MountSpec(v["name"], v["path"], v["read_only"])
            for v in config["volumes"]
        ),
        cpu_limit=config.get("cpus"),
        memory_limit_mb=config.get("memory"),
        restart_policy=config.get("restart", "no"),
        privileged=bool(config.get("privileged")),
        workdir=config.get("workdir"),
        user=config.get("user"),
        network=network,
    )
