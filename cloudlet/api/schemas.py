"""API schemas, apart from the ORM models: one per verb. Their descriptions become the API docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="Matching items in all pages.")
    limit: int
    offset: int


class OperationPublic(BaseModel):
    """A long-running action. Poll it, or wait with `GET /api/v1/operations/{id}?wait=SECONDS`."""

    id: str
    kind: str = Field(examples=["instance.create"])
    target_type: str
    target_id: str | None
    status: Literal["pending", "running", "succeeded", "failed"]
    progress: int = Field(ge=0, le=100)
    message: str | None = None
    error: dict[str, Any] | None = Field(None, description="`code`, `status` and `detail` of a failure.")
    result: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    model_config = ConfigDict(from_attributes=True)


class ImageImport(BaseModel):
    name: str = Field(description="Unique in the workspace.", examples=["debian-12"])
    source_path: str = Field(description="Absolute path of a qcow2 or raw image on the server host.")


class ImagePublic(BaseModel):
    id: str
    name: str
    status: Literal["importing", "ready", "error"]
    format: str | None = None
    virtual_size: int | None = Field(None, description="Disk size the guest sees, in bytes.")
    file_size: int | None = Field(None, description="Bytes the image takes on the host.")
    sha256: str | None = None
    source: str | None = None
    created_at: datetime
    model_config = ConfigDict(from_attributes=True)


class NetworkCreate(BaseModel):
    name: str = Field(examples=["lab"])
    cidr: str = Field(description="Private IPv4 network, /16 to /29.", examples=["10.48.0.0/24"])
    mode: Literal["nat", "isolated"] = Field("nat", description="`nat` reaches outside through the host.")


class NetworkPublic(BaseModel):
    id: str
    name: str
    cidr: str
    mode: str
    gateway: str
    bridge: str
    status: str
    addresses_total: int = 0
    addresses_used: int = 0
    created_at: datetime


class InstanceCreate(BaseModel):
    name: str = Field(description="Unique in the workspace; lowercase DNS label.", examples=["web1"])
    kind: Literal["vm"] = "vm"
    image: str = Field(description="Image name or id.", examples=["tiny"])
    cpus: int = Field(1, ge=1, le=64)
    memory: int = Field(512, ge=64, description="Memory in MiB.")
    disk: int = Field(1, ge=1, description="Root disk in GiB (at least the image's size).")
    network: str = Field("default", description="Network name or id.")
    hostname: str | None = Field(None, description="Guest hostname; defaults to the name.")
    ssh_keys: list[str] = Field(default_factory=list, description="OpenSSH public keys for root.")


class InstancePublic(BaseModel):
    id: str
    name: str
    kind: str
    state: str
    cpus: int
    memory: int = Field(description="MiB")
    disk: int = Field(description="GiB")
    hostname: str
    image: str | None = Field(None, description="Image name.")
    image_id: str | None
    network: str | None = Field(None, description="Network name.")
    network_id: str | None
    ip: str | None = None
    mac: str | None = None
    host: str
    error: str | None = None
    created_at: datetime
    updated_at: datetime


class DriverInfoPublic(BaseModel):
    name: str
    version: str | None
    ok: bool
    error: str | None
    details: dict[str, str]


class ServerInfo(BaseModel):
    version: str
    drivers: list[DriverInfoPublic]
    host: dict[str, int] | None = Field(None, description="cpus, memory_total_mb, memory_available_mb")
