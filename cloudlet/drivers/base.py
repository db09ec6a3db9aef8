"""The driver contract every compute backend implements (libvirt for VMs, Docker for containers,
``sim`` for fast tests and scale simulations).

Drivers are thin and honest: they turn a neutral spec into backend calls and report what really
exists. Business rules (quotas, IPAM, permissions, state machine) live in services. Backend
identities (libvirt UUIDs, Docker ids) never leave a driver: services address instances by
cloudlet's own instance id. Every object a driver creates is labelled as cloudlet's so the
reconciler can find it again after a crash and never touches anyone else's.
"""

from __future__ import annotations

import abc
import enum
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cloudlet.errors import Unsupported


class PowerState(enum.StrEnum):
    """What the backend says an instance is doing (not cloudlet's own life-cycle state)."""

    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting_down"
    CRASHED = "crashed"
    MISSING = "missing"  # the backend no longer has the instance at all
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DriverInfo:
    """A driver's health: a stopped daemon or unusable /dev/kvm is reported here, not raised."""

    name: str
    version: str | None
    ok: bool
    error: str | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DriverCapabilities:
    snapshots: bool = False
    live_migrate: bool = False
    vnc_console: bool = False
    serial_console: bool = False
    pause: bool = False
    iso_install: bool = False  # VMs from an installer ISO: empty disk, ISO as CD-ROM, eject


@dataclass(frozen=True)
class HostResources:
    cpus: int
    memory_total_mb: int
    memory_available_mb: int


@dataclass(frozen=True)
class InstanceStats:
    """One sample of an instance's resource use. Byte counters are cumulative since it started
    (a client computes rates from two samples)."""

    cpu_percent: float  # containers: of one CPU (200.0 is two busy CPUs); VMs: of all its vCPUs
    online_cpus: int
    memory_bytes: int  # containers: without the page cache, as `docker stats` shows it; VMs: see
    # the libvirt driver (the guest's own figure, or the host memory its QEMU process holds)
    memory_limit_bytes: int
    network_rx_bytes: int
    network_tx_bytes: int
    block_read_bytes: int
    block_write_bytes: int
    pids: int  # VMs: always 0 (the guest's processes are not visible from the host)
    read_at: datetime


@dataclass(frozen=True)
class NicSpec:
    network: str  # backend name of the network (as given in NetworkSpec.backend_name)
    mac: str
    ip: str


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a driver needs to build an instance; ``id`` is cloudlet's instance id."""

    id: str
    name: str
    workspace_id: str
    cpus: int
    memory_mb: int
    disk_gb: int
    image_path: Path | None  # VMs: the base disk; containers name their image in ``container``
    image_format: str | None
    hostname: str
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None  # None: a default #cloud-config with the hostname and keys
    network_config: str | None = None  # cloud-init network config; None: DHCP on every NIC
    nics: tuple[NicSpec, ...] = ()
    container: ContainerSpec | None = None
    # A VM installed from an ISO: instead of a copy of ``image_path`` its disk starts empty, and
    # this ISO is its CD-ROM, booted before the disk until it is ejected.
    install_media: Path | None = None


@dataclass(frozen=True)
class PortSpec:
    host: int
    container: int
    protocol: str = "tcp"  # "tcp" or "udp"
    host_ip: str = ""  # "" binds every host address


@dataclass(frozen=True)
class MountSpec:
    """A cloudlet-managed named volume (``source`` is the volume's name) or, when an admin allows
    it, a host folder (``bind`` true, ``source`` an absolute host path)."""

    source: str
    target: str
    read_only: bool = False
    bind: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """What a container runs; the neutral twin of an image, a command line and a HostConfig."""

    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[PortSpec, ...] = ()
    mounts: tuple[MountSpec, ...] = ()
    cpu_limit: float | None = None  # CPUs, e.g. 0.5
    memory_limit_mb: int | None = None
    restart_policy: str = "no"  # no | on-failure | always | unless-stopped
    privileged: bool = False
    workdir: str | None = None
    user: str | None = None
    network: NetworkSpec | None = None  # the cloudlet network its NIC (``InstanceSpec.nics[0]``) is on


@dataclass(frozen=True)
class InstanceStatus:
    id: str
    state: PowerState


@dataclass(frozen=True)
class DhcpHost:
    mac: str
    ip: str
    name: str


@dataclass(frozen=True)
class NetworkSpec:
    backend_name: str
    bridge: str
    cidr: str
    gateway: str
    mode: str  # "nat" or "isolated"
    dhcp_hosts: tuple[DhcpHost, ...] = ()


StateCallback = Callable[[str, PowerState], None]


class ConsoleStream(abc.ABC):
    """A byte stream to one of a running guest's consoles (its serial port, or its VNC server's
    RFB protocol). ``read`` blocks in its own thread; ``close`` may come from any other thread and
    wakes a blocked ``read``, which then returns ``b""``."""

    @abc.abstractmethod
    def read(self, size: int = 65536) -> bytes:
        """The next bytes from the guest side; ``b""`` once the stream ended (guest stopped,
        console taken over by another client, or closed)."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send bytes to the guest side."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the stream; idempotent."""


class ComputeDriver(abc.ABC):
    """Life cycle of instances on one backend. All methods are blocking; call them off the event loop."""

    name: str = "abstract"
    capabilities: DriverCapabilities = DriverCapabilities()

    @abc.abstractmethod
    def info(self) -> DriverInfo:
        """Backend name, version and health. Never raises."""

    @abc.abstractmethod
    def host_resources(self) -> HostResources:
        """CPU count and memory of the host the driver manages."""

    @abc.abstractmethod
    def create(self, spec: InstanceSpec) -> None:
        """Create the instance's disks and definition, stopped.

        Post-condition: on success the instance exists and ``state`` is STOPPED; on failure nothing
        created by this call remains (the driver cleans up after itself) and the error is raised.
        """

    @abc.abstractmethod
    def start(self, instance_id: str) -> None:
        """Start a stopped instance. Starting a running instance is a no-op."""

    @abc.abstractmethod
    def stop(self, instance_id: str, *, force: bool = False, timeout: float = 60.0) -> None:
        """Stop the instance: gracefully (ACPI / SIGTERM) and, if still running after ``timeout``
        seconds, forcibly; ``force`` skips the graceful step. Stopping a stopped instance is a no-op."""

    @abc.abstractmethod
    def reboot(self, instance_id: str) -> None:
        """Restart the guest OS of a running instance (a container: restart its process)."""

    def resize(
        self,
        instance_id: str,
        *,
        cpus: int | None = None,
        memory_mb: int | None = None,
        disk_gb: int | None = None,
    ) -> None:
        """Change a VM's size. vCPUs and memory: more also while it runs (plugged in, up to the
        room its definition leaves; memory in whole blocks), less while it is stopped. Disk: grow
        only, also while it runs (the guest sees the new size at once). Fields left None stay as
        they are."""
        raise Unsupported(f"{self.name} instances cannot be resized")

    def create_snapshot(self, instance_id: str, snapshot_id: str, *, description: str = "") -> bool:
        """Snapshot the instance's disk, and its memory when it runs (capability ``snapshots``);
        returns whether memory was saved."""
        raise Unsupported(f"{self.name} instances have no snapshots")

    def revert_snapshot(self, instance_id: str, snapshot_id: str) -> None:
        """Return to a snapshot: its disk, and its memory and running state if it has memory (a
        disk-only snapshot leaves the instance stopped)."""
        raise Unsupported(f"{self.name} instances have no snapshots")

    def delete_snapshot(self, instance_id: str, snapshot_id: str) -> None:
        """Remove a snapshot; succeeds when it is already gone."""
        raise Unsupported(f"{self.name} instances have no snapshots")

    def export_disk(self, instance_id: str, dest: Path) -> None:
        """Write a stopped VM's system disk to ``dest`` as a standalone qcow2 file (its backing
        chain read through, so ``dest`` has no backing file). Raises ``Conflict`` while it runs.
        On failure ``dest`` may hold a partial file: the caller removes it."""
        raise Unsupported(f"{self.name} instances cannot be published as images")

    def eject_media(self, instance_id: str) -> None:
        """Take the media out of a VM's CD-ROM (capability ``iso_install``), at once if it runs and
        for every later start: it boots from its disk from then on. Ejecting an empty drive is a
        no-op."""
        raise Unsupported(f"{self.name} instances have no CD-ROM")

    def clone(
        self, source_id: str, spec: InstanceSpec, *, linked: bool, snapshot_id: str | None = None
    ) -> None:
        """Create ``spec`` (stopped, like ``create``) with a copy of ``source_id``'s disk, or of its
        ``snapshot_id``. Linked: the copy keeps only what differs from the base image in
        ``spec.image_path`` and stays backed by it; full: it stands alone. The source must not be
        written meanwhile unless a snapshot is copied."""
        raise Unsupported(f"{self.name} instances cannot be cloned")

    def rename(self, instance_id: str, name: str) -> None:  # noqa: B027 - optional hook
        """Show the instance's new cloudlet name in the backend's own label, where the backend lets
        labels change (Docker's are fixed at create: there the label keeps the first name)."""

    def open_serial_console(self, instance_id: str) -> ConsoleStream:
        """The guest's first serial port, both ways (capability ``serial_console``). Takes the
        console over from any other client. Raises ``InvalidState`` (code ``instance_not_running``)
        when the instance does not run."""
        raise Unsupported(f"{self.name} instances have no serial console", code="no_console")

    def open_vnc(self, instance_id: str) -> ConsoleStream:
        """A fresh connection to the guest's VNC server, speaking RFB from its first byte
        (capability ``vnc_console``). Raises ``InvalidState`` when the instance does not run."""
        raise Unsupported(f"{self.name} instances have no graphical console", code="no_console")

    def send_keys(self, instance_id: str, chords: Sequence[tuple[int, ...]]) -> None:
        """Press and release each chord (Linux input key codes held together, see
        ``cloudlet.drivers.keymap``) in order on the guest's keyboard."""
        raise Unsupported(f"{self.name} instances have no keyboard", code="no_console")

    def screenshot(self, instance_id: str) -> bytes:
        """The guest's screen now, as PNG bytes."""
        raise Unsupported(f"{self.name} instances have no screen", code="no_console")

    def stats(self, instance_id: str) -> InstanceStats:
        """One sample of a running instance's resource use. Raises ``InvalidState`` (code
        ``instance_not_running``) when it does not run, ``NotFound`` when it does not exist."""
        raise Unsupported(f"{self.name} instances report no resource use")

    def pause(self, instance_id: str) -> None:
        """Freeze a running instance in memory (capability ``pause``)."""
        raise Unsupported(f"{self.name} instances cannot be paused")

    def resume(self, instance_id: str) -> None:
        """Thaw a paused instance."""
        raise Unsupported(f"{self.name} instances cannot be paused")

    @abc.abstractmethod
    def delete(self, instance_id: str) -> None:
        """Remove the instance and everything the driver created for it (disks, seed, definition).

        Succeeds when the instance is already (partly or wholly) gone, so it can be used as an undo.
        A running instance is forcibly stopped first.
        """

    @abc.abstractmethod
    def state(self, instance_id: str) -> PowerState:
        """Current power state; raises ``cloudlet.errors.NotFound`` when the instance does not exist."""

    @abc.abstractmethod
    def list_instances(self) -> list[InstanceStatus]:
        """Every instance this driver's backend holds that carries cloudlet's label."""

    def reachable(self, instance_id: str, address: str, port: int = 22, timeout: float = 1.0) -> bool:
        """Whether the guest's service answers: a TCP connection to ``port`` (SSH by default) on its
        address is accepted. A refusal does not count: on some networks a firewall refuses for a
        guest that is not there. Used before a pool hands a VM out."""
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return True
        except OSError:  # refused, timed out, no route, host unreachable
            return False

    def residue(self) -> list[str]:
        """Ids of instances that left files behind without a backend definition (crash debris)."""
        return []

    def hypervisor_identity(self) -> tuple[int, int] | None:
        """The (uid, gid) the backend's guest processes run as, which must reach the disks in the
        data folder (QEMU as libvirt-qemu); None when nothing but cloudlet's own user opens them.
        Raises ``DriverUnavailable`` when the backend cannot tell now."""
        return None

    def watch(self, callback: StateCallback) -> None:  # noqa: B027 - optional hook, default no events
        """Register a callback for state changes the backend reports (from any thread).
        Drivers without an event stream rely on the reconciler's periodic resync."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and threads."""


class NetworkDriver(abc.ABC):
    """Virtual networks with a DHCP server whose MAC-to-IP table cloudlet's IPAM fills."""

    @abc.abstractmethod
    def ensure_network(self, spec: NetworkSpec) -> None:
        """Make the network exist and run, with exactly ``spec.dhcp_hosts``. Idempotent.
        On failure nothing created by this call remains."""

    @abc.abstractmethod
    def delete_network(self, backend_name: str) -> None:
        """Stop and remove the network. Succeeds when it is already gone."""

    @abc.abstractmethod
    def add_dhcp_host(self, backend_name: str, host: DhcpHost) -> None:
        """Reserve ``host.ip`` for ``host.mac`` in the network's DHCP server (idempotent)."""

    @abc.abstractmethod
    def remove_dhcp_host(self, backend_name: str, mac: str) -> None:
        """Drop the reservation of ``mac``. Succeeds when there is none."""

    @abc.abstractmethod
    def list_networks(self) -> list[str]:
        """Backend names of the networks that belong to cloudlet."""

    @abc.abstractmethod
    def dhcp_hosts(self, backend_name: str) -> list[DhcpHost]:
        """The DHCP reservations the backend holds for a network (for reconciliation and tests)."""


@dataclass(frozen=True)
class StoragePoolSpec:
    """A storage pool as cloudlet wants it. ``kind`` "dir": a folder on the host at ``path``;
    "netfs": the NFS export ``source_host``:``source_path`` mounted at ``path``."""

    backend_name: str
    kind: str
    path: str
    source_host: str | None = None
    source_path: str | None = None


@dataclass(frozen=True)
class StorageUsage:
    """Bytes of a pool (or a volume: ``capacity`` is its virtual size, ``allocation`` what it
    takes on disk, ``available`` 0)."""

    capacity: int
    allocation: int
    available: int


class StorageDriver(abc.ABC):
    """Storage pools and the volumes in them, and attaching those volumes to VMs as extra disks.
    Volumes are named by cloudlet's volume id; user-chosen names never reach the backend."""

    @abc.abstractmethod
    def ensure_pool(self, spec: StoragePoolSpec) -> None:
        """Make the pool exist, run and start with the host (its folder made if missing). Idempotent;
        on failure nothing created by this call remains."""

    @abc.abstractmethod
    def delete_pool(self, backend_name: str) -> None:
        """Stop and forget the pool; its folder and any files in it stay. Succeeds when it is gone."""

    @abc.abstractmethod
    def pool_usage(self, backend_name: str) -> StorageUsage:
        """Capacity, allocation and available bytes, read live from the backend after a refresh."""

    @abc.abstractmethod
    def list_pools(self) -> list[str]:
        """Backend names of the pools that belong to this deployment."""

    @abc.abstractmethod
    def create_volume(self, pool: str, volume_id: str, size_bytes: int) -> None:
        """A new empty qcow2 volume of ``size_bytes``. Raises ``Conflict`` if it exists."""

    @abc.abstractmethod
    def delete_volume(self, pool: str, volume_id: str) -> None:
        """Remove the volume and its data; succeeds when it is already gone."""

    @abc.abstractmethod
    def volume_usage(self, pool: str, volume_id: str) -> StorageUsage:
        """The volume's virtual size and what it takes on disk; ``NotFound`` when it is missing."""

    @abc.abstractmethod
    def resize_volume(
        self, pool: str, volume_id: str, size_bytes: int, *, instance_id: str | None = None, target: str = ""
    ) -> None:
        """Grow the volume to ``size_bytes``. When it is attached (``instance_id``, ``target``) to a
        running VM, the VM grows it, so the guest sees the new size at once."""

    @abc.abstractmethod
    def attach_volume(self, instance_id: str, pool: str, volume_id: str, target: str) -> None:
        """Make the volume disk ``target`` of the VM: live and in its definition while it runs,
        in its definition only while it is stopped."""

    @abc.abstractmethod
    def detach_volume(self, instance_id: str, target: str) -> None:
        """Remove disk ``target`` from the VM (live, waiting for the guest to let go, then from its
        definition). Succeeds when the VM or the disk is already gone. A guest that does not let
        go in time is an error, and the disk stays attached."""
