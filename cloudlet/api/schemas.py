"""API schemas, apart from the ORM models: one per verb. Their descriptions become the API docs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, computed_field

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


ImageFormat = Literal["qcow2", "raw", "iso"]


class ImageProperties(BaseModel):
    os: str | None = Field(
        None, max_length=64, description="The guest OS, free text or a short id.", examples=["debian12"]
    )
    min_disk: int | None = Field(None, ge=1, description="Smallest disk, in GiB, an instance of it gets.")
    min_memory: int | None = Field(None, ge=1, description="Least memory, in MiB, an instance of it gets.")


class ImageImport(ImageProperties):
    """Import from a path on the server host (`source_path`) or download from `url`: one of the two."""

    name: str = Field(description="Unique in the workspace.", examples=["debian-12"])
    source_path: str | None = Field(
        None, description="Absolute path of an image file on the server host, in an allowed folder."
    )
    url: str | None = Field(
        None,
        description="http(s) URL to download the image from (streamed; progress in the operation).",
        examples=["https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2"],
    )
    sha256: str | None = Field(
        None, description="Expected sha256 of the file (hex): a download that differs fails."
    )
    format: ImageFormat | None = Field(
        None,
        description="What the file must be; detected when left out. `iso`: an installer CD (ISO 9660).",
    )


class ImagePublic(BaseModel):
    id: str
    name: str
    status: Literal["importing", "ready", "error"]
    format: str | None = None
    virtual_size: int | None = Field(None, description="Disk size the guest sees, in bytes.")
    file_size: int | None = Field(None, description="Bytes the image takes on the host.")
    sha256: str | None = None
    source: str | None = None
    public: bool = Field(False, description="Published by a system admin to every workspace.")
    os: str | None = Field(None, description="The guest OS.")
    min_disk: int | None = Field(None, description="Smallest disk, in GiB, an instance of it gets.")
    min_memory: int | None = Field(None, description="Least memory, in MiB, an instance of it gets.")
    created_at: datetime
    model_config = ConfigDict(from_attributes=True)

    @computed_field(description="`disk` (the instance's disk starts as a copy) or `iso` (an installer CD).")  # type: ignore[prop-decorator]
    @property
    def kind(self) -> Literal["disk", "iso"]:
        return "iso" if self.format == "iso" else "disk"


class ImageUpdate(ImageProperties):
    """The fields given change; a property set to null is cleared."""

    public: bool | None = Field(None, description="Share with every workspace (system admins only).")


class InstancePublish(ImageProperties):
    """Make an image of a stopped VM's disk."""

    name: str = Field(description="Name of the new image, unique in the workspace.", examples=["web-golden"])


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


class GuestUserCreate(BaseModel):
    """A user in the guest. Give `password` (hashed by the server, never stored) or `password_hash`
    (crypt(3): SHA-512, SHA-256, yescrypt or bcrypt, e.g. from `mkpasswd -m sha-512`)."""

    name: str = Field(examples=["alice"])
    password: str | None = Field(None, min_length=1, max_length=256)
    password_hash: str | None = None
    ssh_keys: list[str] = Field(default_factory=list)
    sudo: bool = Field(False, description="Passwordless sudo.")
    shell: str | None = Field(None, examples=["/bin/bash"])
    groups: list[str] = Field(default_factory=list)


class NicCreate(BaseModel):
    network: str = Field(description="Network name or id.")
    ip: str | None = Field(None, description="An address of that network; default: the lowest free.")


class InstanceCreate(BaseModel):
    """A VM (the default kind)."""

    name: str = Field(
        description="Unique in the workspace; 1-63 printable characters, no '/', e.g. web1, my_vm or "
        "Test.VM. Shown as given; the guest hostname is made from it (my_vm -> my-vm).",
        examples=["web1"],
    )
    kind: Literal["vm"] = "vm"
    image: str = Field(description="Image name or id.", examples=["tiny"])
    cpus: int = Field(1, ge=1, le=64)
    memory: int = Field(512, ge=64, description="Memory in MiB.")
    disk: int = Field(1, ge=1, description="Root disk in GiB (at least the image's size).")
    network: str = Field("default", description="Network name or id.")
    hostname: str | None = Field(
        None,
        description="Guest hostname (a DNS label); default: the name, or one made from it when the "
        "name is not a DNS label (my_vm -> my-vm; when another VM holds it: 409 hostname_taken).",
    )
    ssh_keys: list[str] = Field(
        default_factory=list, description="OpenSSH public keys for the image's default user (root on tiny)."
    )
    user_data: str | None = Field(
        None,
        description="cloud-init user-data: a #cloud-config (merged with the fields here), a #! script, "
        "#include, #cloud-boothook or MIME multipart. Up to 64 KiB.",
    )
    users: list[GuestUserCreate] = Field(default_factory=list, description="Guest users cloud-init creates.")
    ssh_password_auth: bool = Field(False, description="Allow SSH logins with the users' passwords.")
    ip: str | None = Field(None, description="An address of the network to take; default: the lowest free.")
    static_ip: bool = Field(
        False, description="Write the address, gateway and DNS into the guest's network config (no DHCP)."
    )
    dns: list[str] = Field(
        default_factory=list, description="Nameservers for static_ip; default: the gateway."
    )
    network_config: dict[str, Any] | None = Field(
        None, description="Your own cloud-init network config (version 1 or 2), written to the seed as is."
    )
    nics: list[NicCreate] = Field(
        default_factory=list,
        description="Several NICs on several networks, the first the primary (replaces network and ip).",
    )


class PortMapping(BaseModel):
    host: int = Field(description="Port on the host.", examples=[8080])
    container: int = Field(description="Port inside the container.", examples=[80])
    protocol: Literal["tcp", "udp"] = "tcp"
    host_ip: str = Field("", description="Host address to bind; empty binds all.")


class VolumeMount(BaseModel):
    path: str = Field(description="Absolute folder inside the container.", examples=["/data"])
    name: str | None = Field(
        None, description="A cloudlet-managed named volume, made on first use and removed with the container."
    )
    host_path: str | None = Field(
        None, description="A host folder to bind-mount: refused unless an admin set allow_host_mounts."
    )
    read_only: bool = False


class ContainerCreate(BaseModel):
    """A container from a local image (pull or build it first); runs detached."""

    name: str = Field(description="Unique in the workspace; lowercase DNS label.", examples=["web"])
    kind: Literal["container"]
    image: str = Field(description="Image reference or id.", examples=["local/busybox:latest"])
    command: list[str] | None = Field(
        None, description="Replaces the image's CMD.", examples=[["httpd", "-f"]]
    )
    entrypoint: list[str] | None = Field(None, description="Replaces the image's ENTRYPOINT.")
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[PortMapping] = Field(default_factory=list)
    volumes: list[VolumeMount] = Field(default_factory=list)
    cpus: float | None = Field(None, description="CPU limit, e.g. 0.5; none means unlimited.")
    memory: int | None = Field(None, description="Memory limit in MiB; none means unlimited.")
    restart: str = Field("no", description="no | on-failure | always | unless-stopped")
    network: str = Field("default", description="cloudlet network name or id; its IPAM gives the address.")
    hostname: str | None = None
    privileged: bool = Field(False, description="Refused unless an admin set allow_privileged.")
    workdir: str | None = None
    user: str | None = None


def _kind_of(value: Any) -> str:
    kind = value.get("kind", "vm") if isinstance(value, dict) else getattr(value, "kind", "vm")
    return "container" if kind == "container" else "vm"


AnyInstanceCreate = Annotated[
    Annotated[InstanceCreate, Tag("vm")] | Annotated[ContainerCreate, Tag("container")],
    Discriminator(_kind_of),
]


class ContainerPublic(BaseModel):
    image: str
    short_id: str | None = Field(None, description="The engine's short container id.")
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str | None] = Field(
        default_factory=dict,
        description="Environment variables. Values are often secrets: callers who cannot edit the "
        "container (`instance:edit`) get the names with null values.",
    )
    ports: list[PortMapping] = Field(default_factory=list)
    volumes: list[VolumeMount] = Field(default_factory=list)
    cpus: float | None = None
    memory: int | None = Field(None, description="MiB")
    restart: str = "no"
    privileged: bool = False
    workdir: str | None = None
    user: str | None = None
    status: str | None = Field(None, description="The engine's own status (running, exited...).")
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    size_rw: int | None = Field(None, description="Bytes the container wrote (ask with size=true).")
    size_root_fs: int | None = Field(None, description="Image plus written bytes (ask with size=true).")


class NicPublic(BaseModel):
    network: str = Field(description="Network name.")
    network_id: str
    ip: str
    mac: str


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
    ip: str | None = Field(None, description="The primary NIC's address.")
    mac: str | None = None
    nics: list[NicPublic] = Field(default_factory=list, description="Every NIC, the primary first.")
    host: str
    error: str | None = None
    container: ContainerPublic | None = Field(None, description="Container settings (kind container).")
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


class ProjectCreate(BaseModel):
    name: str = Field(description="Unique in the workspace; lowercase DNS label.", examples=["webapp"])
    dockerfile: str | None = Field(
        None,
        description="Content of the project's `Dockerfile` (at most 10 MiB); omit for an empty project.",
        examples=["FROM alpine:3.20\nCOPY . /app\n"],
    )


class ProjectPublic(BaseModel):
    """A Dockerfile project: a folder on the server holding a Dockerfile and the files it uses."""

    name: str
    file_count: int = Field(description="Files in the project, in all folders.")
    total_bytes: int = Field(description="Bytes of all its files.")
    updated_at: datetime = Field(description="Last change of any of its files.")
    model_config = ConfigDict(from_attributes=True)


class ProjectFilePublic(BaseModel):
    path: str = Field(description="Relative to the project folder, '/'-separated.", examples=["app/main.py"])
    size: int = Field(description="Bytes.")
    modified_at: datetime
    model_config = ConfigDict(from_attributes=True)


class ProjectDetail(ProjectPublic):
    files: list[ProjectFilePublic] = Field(description="Every file, sorted by path.")
