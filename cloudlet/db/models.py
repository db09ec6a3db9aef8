"""SQLAlchemy 2 models: the desired state and everything cloudlet allocated (IPs, names, tokens).

Uniqueness that matters under concurrency (names per workspace, addresses and MACs per network) is
enforced by constraints, so allocation stays atomic across threads and server replicas.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

DEFAULT_WORKSPACE = "default"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes; SQLite drops the zone, so it is put back as UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Meta(Base):
    """Deployment-wide facts, e.g. the id that labels this deployment's backend objects."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Workspace(Base):
    __tablename__ = "workspaces"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    """A person. Local accounts have an argon2id password hash; OpenID Connect accounts an
    (issuer, subject) pair. ``is_admin`` makes a system admin: every workspace, users, quotas."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_users_oidc"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    oidc_issuer: Mapped[str | None] = mapped_column(Text, nullable=True)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Role(Base):
    """A named set of permissions ("instance:view", ...). Built-in roles have no workspace."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_roles_workspace_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str | None] = mapped_column(ForeignKey("workspaces.id"), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(64))
    permissions: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("workspace_id", "user_id", name="uq_memberships_workspace_user"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    role_id: Mapped[str] = mapped_column(ForeignKey("roles.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """Bearer tokens of a user, scoped to one workspace and one role; only a SHA-256 of the
    (high-entropy, random) secret is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(32), default="admin")  # legacy: the foundation's role name
    workspace_id: Mapped[str | None] = mapped_column(ForeignKey("workspaces.id"), nullable=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True, index=True)
    role_id: Mapped[str | None] = mapped_column(ForeignKey("roles.id"), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class RefreshToken(Base):
    """One link of a login's refresh chain. Each use rotates it; presenting a used one again
    means it was stolen, and the whole family (the login) is revoked."""

    __tablename__ = "refresh_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Quota(Base):
    """Limits of a workspace; None is unlimited."""

    __tablename__ = "quotas"
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), primary_key=True)
    instances: Mapped[int | None] = mapped_column(nullable=True)
    vcpus: Mapped[int | None] = mapped_column(nullable=True)
    memory_mb: Mapped[int | None] = mapped_column(nullable=True)
    disk_gb: Mapped[int | None] = mapped_column(nullable=True)
    networks: Mapped[int | None] = mapped_column(nullable=True)
    ips: Mapped[int | None] = mapped_column(nullable=True)
    pool_checkouts: Mapped[int | None] = mapped_column(nullable=True)


class ContainerImageClaim(Base):
    """A container image tag that a workspace pulled or built. The engine's tags are host-wide:
    a tag one workspace holds is invisible to the others and cannot be taken over by them.
    Images nobody claims (made on the host outside cloudlet) are shared by every workspace."""

    __tablename__ = "container_images"
    __table_args__ = (UniqueConstraint("workspace_id", "ref", name="uq_container_images_workspace_ref"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    ref: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who did what to which target, when, from where, and how it ended."""

    __tablename__ = "audit_log"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    workspace_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    user_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    principal: Mapped[str] = mapped_column(String(128))
    token_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    action: Mapped[str] = mapped_column(String(96))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[int] = mapped_column()
    result: Mapped[str] = mapped_column(String(16))


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_images_workspace_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="importing")
    format: Mapped[str | None] = mapped_column(String(16), nullable=True)
    virtual_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    file_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Properties: the guest OS ("debian12", free text) and what an instance of it needs at least.
    os: Mapped[str | None] = mapped_column(String(64), nullable=True)
    min_disk: Mapped[int | None] = mapped_column(nullable=True)  # GiB
    min_memory: Mapped[int | None] = mapped_column(nullable=True)  # MiB
    # published by a system admin: every workspace may create instances from it
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Network(Base):
    __tablename__ = "networks"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_networks_workspace_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    cidr: Mapped[str] = mapped_column(String(64), unique=True)
    mode: Mapped[str] = mapped_column(String(16))
    gateway: Mapped[str] = mapped_column(String(64))
    bridge: Mapped[str] = mapped_column(String(15), unique=True)
    backend_name: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="creating")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IPAllocation(Base):
    __tablename__ = "ip_allocations"
    __table_args__ = (
        UniqueConstraint("network_id", "address", name="uq_ip_network_address"),
        UniqueConstraint("network_id", "mac", name="uq_ip_network_mac"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    address: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(17))
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("instances.id"), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (
        UniqueConstraint("workspace_id", "name", name="uq_instances_workspace_name"),
        Index("uq_instances_workspace_dns_name", "workspace_id", "dns_name", unique=True),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16), default="vm", index=True)
    # Kind-specific settings: a container's image, command, env, ports, volumes, limits, short id.
    config: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    image_id: Mapped[str | None] = mapped_column(ForeignKey("images.id"), nullable=True, index=True)
    network_id: Mapped[str | None] = mapped_column(ForeignKey("networks.id"), nullable=True, index=True)
    cpus: Mapped[int] = mapped_column(default=1)
    memory_mb: Mapped[int] = mapped_column(default=512)
    disk_gb: Mapped[int] = mapped_column(default=1)
    hostname: Mapped[str] = mapped_column(String(63))
    # The hostname a VM took from its name (``names.hostname_for``), claimed in its workspace so
    # that two names giving the same hostname (my_vm, My.VM) cannot both have it; None when the
    # hostname was chosen apart from the name, and for containers.
    dns_name: Mapped[str | None] = mapped_column(String(63), nullable=True)
    ssh_keys: Mapped[list[Any]] = mapped_column(default=list)
    host: Mapped[str] = mapped_column(String(64), default="local")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The one operation allowed to change this instance right now (one lock per instance).
    locked_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Pool(Base):
    """A reservation pool: ready VMs of one template, checked out and back in by people."""

    __tablename__ = "pools"
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_pools_workspace_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    template: Mapped[dict[str, Any]] = mapped_column()
    min_ready: Mapped[int] = mapped_column(default=0)
    max_size: Mapped[int] = mapped_column(default=1)
    lease_default: Mapped[int] = mapped_column(default=3600)  # seconds
    lease_max: Mapped[int] = mapped_column(default=86400)  # seconds
    on_checkin: Mapped[str] = mapped_column(String(16), default="reset")
    idle_timeout: Mapped[int | None] = mapped_column(nullable=True)  # seconds
    legacy_api: Mapped[bool] = mapped_column(Boolean, default=False)  # the replaced system's API
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PoolMember(Base):
    """A VM of a pool and who holds it. ``status``: provisioning, available, checked-out,
    resetting, error. A checkout is one conditional update of ``status``: never two holders."""

    __tablename__ = "pool_members"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id"), index=True)
    instance_id: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str | None] = mapped_column(String(63), nullable=True)  # the instance's, kept here
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # so is its address
    status: Mapped[str] = mapped_column(String(16), default="provisioning", index=True)
    holder_user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    checked_out_at: Mapped[datetime | None] = mapped_column(nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True, index=True)
    warned: Mapped[bool] = mapped_column(Boolean, default=False)
    idle_since: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PoolLease(Base):
    """The history: who had which VM of a pool, when, and how it ended."""

    __tablename__ = "pool_leases"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id"), index=True)
    instance_id: Mapped[str] = mapped_column(String(36), index=True)
    instance_name: Mapped[str] = mapped_column(String(63))
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    holder_user_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    holder: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)


class Snapshot(Base):
    """A point a VM can return to: its disk, plus its memory when it was running. The backend
    names it by ``id``; ``status``: creating, ready, deleting."""

    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("instance_id", "name", name="uq_snapshots_instance_name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    with_memory: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="creating")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the VM's size when taken: a revert brings it back (None for snapshots older than 0011)
    cpus: Mapped[int | None] = mapped_column(nullable=True)
    memory_mb: Mapped[int | None] = mapped_column(nullable=True)
    disk_gb: Mapped[int | None] = mapped_column(nullable=True)


class ConsoleTicket(Base):
    """A one-time pass to open one console of one instance, for clients that cannot send an
    Authorization header (noVNC, browsers). Only the SHA-256 of the ticket is stored; ``used_at``
    is set by the one conditional update that redeems it, so it works once across replicas."""

    __tablename__ = "console_tickets"
    __table_args__ = (UniqueConstraint("secret_hash", name="uq_console_tickets_secret_hash"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    secret_hash: Mapped[str] = mapped_column(String(64))
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[str] = mapped_column(String(36))
    console: Mapped[str] = mapped_column(String(16))  # "vnc" or "serial"
    principal: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    token_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    login_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # the issuing sign-in
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class LeaderLock(Base):
    """A named lock with an expiry: the replica holding it runs that controller; the others wait
    for it to lapse (a replica that dies stops renewing, so another takes over)."""

    __tablename__ = "leader_locks"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column()


class Runner(Base):
    """A live server process (one replica). Operations record the runner that runs them, so a
    starting replica recovers only the work of replicas that stopped beating, never a live one's."""

    __tablename__ = "runners"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column()
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Operation(Base):
    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    kind: Mapped[str] = mapped_column(String(48))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    runner_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    progress: Mapped[int] = mapped_column(default=0)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)


class OSCloudId(Base):
    """Integer ids for the OS Cloud compatibility API, which numbers its VMs 1, 2, 3..."""

    __tablename__ = "oscloud_ids"
    # SQLite would hand out max(id)+1 again after the newest row goes (with its VM): AUTOINCREMENT
    # makes each number once only, as PostgreSQL's sequence does.
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), unique=True)


class StoragePool(Base):
    """Host-wide storage that volumes are made in (like a Proxmox storage), managed by system
    admins: a ``dir`` pool (a folder on the host) or a ``netfs`` pool (an NFS export mounted at
    ``path``). ``backend_name`` is the libvirt pool's name; ``status``: active or error."""

    __tablename__ = "storage_pools"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    source_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    source_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    backend_name: Mapped[str] = mapped_column(String(64), unique=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Volume(Base):
    """An extra disk of a workspace, a qcow2 volume in a storage pool, attached to at most one VM
    at a time. Attaching is one conditional update of ``instance_id`` (never two VMs); ``target``
    is its device in that VM (vdc, vdd...). ``status``: creating, ready, resizing, attaching,
    detaching, deleting: anything but ready means an operation holds it."""

    __tablename__ = "volumes"
    __table_args__ = (
        UniqueConstraint("workspace_id", "name", name="uq_volumes_workspace_name"),
        UniqueConstraint("instance_id", "target", name="uq_volumes_instance_target"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    pool_id: Mapped[str] = mapped_column(ForeignKey("storage_pools.id"), index=True)
    size_gb: Mapped[int] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="creating")
    instance_id: Mapped[str | None] = mapped_column(ForeignKey("instances.id"), nullable=True, index=True)
    target: Mapped[str | None] = mapped_column(String(8), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
