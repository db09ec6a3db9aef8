"""Storage pools: host-wide places volumes are made in, managed by system admins (like Proxmox
storages). A ``dir`` pool at ``<data_dir>/volumes`` is made on start; admins add ``netfs`` pools
(an NFS export libvirt mounts). Capacity and usage are read live from the backend."""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloudlet.db.models import Operation, StoragePool, Volume, new_id
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.drivers.base import StorageDriver, StoragePoolSpec, StorageUsage
from cloudlet.errors import CloudletError, Conflict, DriverUnavailable, InUse, Invalid, NotFound
from cloudlet.services.context import RequestContext
from cloudlet.services.names import check_name, insert_unique, is_uuid
from cloudlet.services.operations import OperationContext, Operations, OpStatus

log = logging.getLogger(__name__)
DEFAULT_POOL = "default"
KINDS = ("dir", "netfs")
# A pool's folder must not be one the host itself lives on: libvirt would mount over it (netfs)
# or fill it with volumes (dir).
SYSTEM_DIRS = frozenset(
    PurePosixPath(p)
    for p in [
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib64",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/var/lib",
        "/var/tmp",
    ]
)
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
MAX_PATH = 1024


@dataclass(frozen=True)
class PoolRequest:
    name: str
    kind: str = "dir"
    path: str = ""  # the folder (dir) or the mount point (netfs) on the host
    source_host: str | None = None  # netfs: the NFS server
    source_path: str | None = None  # netfs: the exported folder


def check_folder(value: str, what: str) -> str:
    """An absolute, normalized host path that is not a system folder."""
    if not value or len(value) > MAX_PATH or any(ord(ch) < 32 or ch == "\x7f" for ch in value):
        raise Invalid(f"{what} must be an absolute path of printable characters", code="invalid_path")
    path = PurePosixPath(value)
    if not path.is_absolute() or str(path) != value or ".." in path.parts:
        raise Invalid(f"{what} must be an absolute, normalized path: {value!r}", code="invalid_path")
    if path in SYSTEM_DIRS:
        raise Invalid(f"{what} {value!r} is a system folder; use a folder of its own", code="invalid_path")
    return value


def check_host(value: str) -> str:
    """An NFS server: an IP address or a DNS name."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not HOSTNAME.fullmatch(value):
            raise Invalid(f"not a host name or IP address: {value!r}", code="invalid_host") from None
    return value


def validate(req: PoolRequest) -> PoolRequest:
    check_name(req.name, what="storage pool name")
    if req.kind not in KINDS:
        raise Invalid(
            f"unknown storage pool kind {req.kind!r}; use one of {', '.join(KINDS)}", code="invalid_kind"
        )
    check_folder(req.path, "path")
    if req.kind == "netfs":
        if not req.source_host or not req.source_path:
            raise Invalid("a netfs pool needs source_host and source_path", code="invalid_source")
        check_host(req.source_host)
        check_folder(req.source_path, "source_path")
    elif req.source_host or req.source_path:
        raise Invalid("only netfs pools take source_host and source_path", code="invalid_source")
    return req


def spec_of(row: StoragePool) -> StoragePoolSpec:
    return StoragePoolSpec(row.backend_name, row.kind, row.path, row.source_host, row.source_path)


class StoragePools:
    def __init__(
        self,
        sessions: SessionFactory,
        ops: Operations,
        driver: StorageDriver | None,
        deployment: str,
        default_path: Path,
    ) -> None:
        self.sessions = sessions
        self.ops = ops
        self._driver = driver
        self.deployment = deployment
        self.default_path = default_path

    @property
    def backend(self) -> StorageDriver | None:
        """The storage driver, or None when this server's VM driver has no storage."""
        return self._driver

    def driver(self) -> StorageDriver:
        if self._driver is None:
            raise DriverUnavailable(
                "this server's VM driver has no storage pools", code="storage_unavailable"
            )
        return self._driver

    def backend_name(self, pool_id: str) -> str:
        return f"cloudlet-{self.deployment}-{pool_id}"

    # -- reading ---------------------------------------------------------------------------------
    @staticmethod
    def get(session: Session, ref: str) -> StoragePool:
        column = StoragePool.id if is_uuid(ref) else StoragePool.name
        row = session.scalar(select(StoragePool).where(column == ref))
        if row is None:
            raise NotFound(f"storage pool {ref!r} not found", code="storage_pool_not_found")
        return row

    @staticmethod
    def all(session: Session) -> list[StoragePool]:
        return list(session.scalars(select(StoragePool).order_by(StoragePool.created_at, StoragePool.name)))

    def usage(self, row: StoragePool) -> StorageUsage | None:
        """Live numbers of an active pool; None when the backend cannot tell now."""
        if row.status != "active" or self._driver is None:
            return None
        try:
            return self._driver.pool_usage(row.backend_name)
        except CloudletError:
            return None

    @staticmethod
    def volume_count(session: Session, pool_id: str) -> int:
        return session.scalar(select(func.count()).where(Volume.pool_id == pool_id)) or 0

    # -- changes ---------------------------------------------------------------------------------
    def ensure_default(self) -> None:
        """Make the default dir pool on first start, and make sure it runs on every start."""
        if self._driver is None:
            return
        with transaction(self.sessions) as s:
            row = s.scalar(select(StoragePool).where(StoragePool.is_default.is_(True)))
            if row is None:
                pool_id = new_id()
                row = StoragePool(
                    id=pool_id,
                    name=DEFAULT_POOL,
                    kind="dir",
                    path=str(self.default_path),
                    is_default=True,
                    status="active",
                    backend_name=self.backend_name(pool_id),
                )
                insert_unique(s, row, f"a storage pool named {DEFAULT_POOL!r} exists")
            spec = spec_of(row)
        self._driver.ensure_pool(spec)

    def recover(self) -> None:
        """At start: finish pool changes a dead server left half-way (a create is rolled back, a
        delete finished) and make sure every active pool runs. A pool that cannot be started
        (an NFS server away) is logged and stays listed, without numbers."""
        if self._driver is None:
            return
        with self.sessions() as s:
            busy = set(
                s.scalars(
                    select(Operation.target_id).where(
                        Operation.status.in_([OpStatus.PENDING, OpStatus.RUNNING])
                    )
                )
            )
            pools = [(p.id, p.status, spec_of(p)) for p in self.all(s) if p.id not in busy]
        for pool_id, status, spec in pools:
            try:
                if status in ("creating", "deleting"):
                    self._driver.delete_pool(spec.backend_name)
                    self._forget(pool_id)
                elif status == "active":
                    self._driver.ensure_pool(spec)
            except CloudletError as err:
                log.error("storage pool %s: %s", spec.backend_name, err.detail)

    def create(self, ctx: RequestContext, req: PoolRequest) -> tuple[str, str]:
        """Define, build and start a pool (system admins); returns (pool id, operation id)."""
        ctx.require_admin("manage storage pools")
        validate(req)
        driver = self.driver()
        with transaction(self.sessions) as s:
            if s.scalar(select(StoragePool.id).where(StoragePool.path == req.path)):
                raise Conflict(f"a storage pool already uses {req.path}", code="path_taken")
            pool_id = new_id()
            row = StoragePool(
                id=pool_id,
                name=req.name,
                kind=req.kind,
                path=req.path,
                source_host=req.source_host,
                source_path=req.source_path,
                status="creating",
                backend_name=self.backend_name(pool_id),
            )
            insert_unique(s, row, f"a storage pool named {req.name!r} exists")
            op = self.ops.record(s, ctx, "storage_pool.create", "storage_pool", pool_id)
            spec = spec_of(row)

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.on_undo("forget the pool", lambda: self._forget(pool_id))
            octx.progress(20, "defining and starting the pool")
            octx.retry(lambda: driver.ensure_pool(spec))
            octx.on_undo("remove the backend pool", lambda: driver.delete_pool(spec.backend_name))
            usage = driver.pool_usage(spec.backend_name)
            self._set_status(pool_id, "active")
            return {"pool_id": pool_id, "capacity": usage.capacity, "available": usage.available}

        self.ops.launch(op, step)
        return pool_id, op.id

    def delete(self, ctx: RequestContext, ref: str) -> str:
        """Stop and forget a pool that holds no volumes (system admins). Files stay on disk."""
        ctx.require_admin("manage storage pools")
        driver = self.driver()
        with transaction(self.sessions) as s:
            row = self.get(s, ref)
            if row.is_default:
                raise Conflict("the default storage pool cannot be deleted", code="default_pool")
            count = self.volume_count(s, row.id)
            if count:
                raise InUse(f"storage pool {row.name!r} holds {count} volume(s)", code="storage_pool_in_use")
            if row.status != "active":
                raise Conflict(f"storage pool {row.name!r} is {row.status}", code="storage_pool_busy")
            op = self.ops.record(s, ctx, "storage_pool.delete", "storage_pool", row.id)
            row.status = "deleting"  # no volume is made in it from now on
            pool_id, backend = row.id, row.backend_name

        def step(octx: OperationContext) -> None:
            try:
                octx.retry(lambda: driver.delete_pool(backend))
            except Exception:
                self._set_status(pool_id, "active")
                raise
            self._forget(pool_id)

        self.ops.launch(op, step)
        return op.id

    def _set_status(self, pool_id: str, status: str) -> None:
        with transaction(self.sessions) as s:
            row = s.get(StoragePool, pool_id)
            if row is not None:
                row.status = status

    def _forget(self, pool_id: str) -> None:
        with transaction(self.sessions) as s:
            row = s.get(StoragePool, pool_id)
            if row is not None:
                s.delete(row)
