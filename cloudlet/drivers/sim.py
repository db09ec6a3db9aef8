"""An in-memory driver with the same contract as the real ones, for fast unit tests and scale
simulations. It is never the only proof that a feature works: the integration suite runs the
same flows on libvirt."""

from __future__ import annotations

import dataclasses
import io
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cloudlet.drivers import qemu_img
from cloudlet.drivers.base import (
    ComputeDriver,
    ConsoleStream,
    DhcpHost,
    DriverCapabilities,
    DriverInfo,
    HostResources,
    InstanceSpec,
    InstanceStats,
    InstanceStatus,
    NetworkDriver,
    NetworkSpec,
    PowerState,
    StateCallback,
)
from cloudlet.drivers.sim_storage import SimStorage
from cloudlet.errors import Conflict, DriverError, InvalidState, NotFound


@dataclass
class _SimNetwork:
    spec: NetworkSpec
    hosts: dict[str, DhcpHost] = field(default_factory=dict)


class LoopbackConsole(ConsoleStream):
    """A simulated console: it says ``greeting`` first, then echoes what it is sent (as a serial
    line in echo mode does). Not a guest: the integration suite proves the real consoles."""

    def __init__(self, greeting: bytes) -> None:
        self._cond = threading.Condition()
        self._pending = bytearray(greeting)
        self.closed = False

    def read(self, size: int = 65536) -> bytes:
        with self._cond:
            while not self._pending and not self.closed:
                self._cond.wait()
            if self.closed:
                return b""
            out = bytes(self._pending[:size])
            del self._pending[:size]
            return out

    def write(self, data: bytes) -> None:
        with self._cond:
            self._pending += data
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class SimDriver(ComputeDriver, NetworkDriver, SimStorage):
    name = "sim"
    capabilities = DriverCapabilities(
        pause=True, snapshots=True, serial_console=True, vnc_console=True, iso_install=True
    )
    SCREEN = (640, 400)

    def __init__(self, *, cpus: int = 8, memory_mb: int = 32768) -> None:
        self._lock = threading.Lock()
        self.instances: dict[str, PowerState] = {}
        self.snapshots: dict[str, dict[str, PowerState]] = {}  # instance -> snapshot -> state then
        self.specs: dict[str, InstanceSpec] = {}
        self.media: dict[str, Path] = {}  # instance -> the ISO in its CD-ROM
        self.clones: dict[str, tuple[str, bool, str | None]] = {}  # clone -> (source, linked, snapshot)
        self.networks: dict[str, _SimNetwork] = {}
        self._callbacks: list[StateCallback] = []
        self.resources = HostResources(cpus=cpus, memory_total_mb=memory_mb, memory_available_mb=memory_mb)
        self.typed: dict[str, list[tuple[int, ...]]] = {}  # instance -> chords sent to its keyboard
        self.consoles: dict[str, list[LoopbackConsole]] = {}  # instance -> its open consoles
        self.started_at: dict[str, float] = {}  # running instance -> time.monotonic() of its start
        # Test hooks: make the named method raise DriverError a number of times.
        self.fail_next: dict[str, int] = {}
        self._init_storage()

    def _maybe_fail(self, method: str, transient: bool = False) -> None:
        if self.fail_next.get(method, 0) > 0:
            self.fail_next[method] -= 1
            raise DriverError(f"simulated failure in {method}", transient=transient)

    def _set(self, instance_id: str, state: PowerState) -> None:
        self.instances[instance_id] = state
        if state is PowerState.RUNNING:
            self.started_at.setdefault(instance_id, time.monotonic())
        elif state is not PowerState.PAUSED:
            self.started_at.pop(instance_id, None)
        if state not in (PowerState.RUNNING, PowerState.PAUSED):  # a guest that is gone hangs up
            for console in self.consoles.pop(instance_id, []):
                console.close()
        for cb in self._callbacks:
            cb(instance_id, state)

    def info(self) -> DriverInfo:
        return DriverInfo(self.name, "1", ok=True)

    def host_resources(self) -> HostResources:
        return self.resources

    def create(self, spec: InstanceSpec) -> None:
        with self._lock:
            self._maybe_fail("create")
            if spec.id in self.instances:
                raise DriverError(f"instance {spec.id} exists")
            self.specs[spec.id] = spec
            self.instances[spec.id] = PowerState.STOPPED
            if spec.install_media is not None:
                self.media[spec.id] = spec.install_media

    def _require(self, instance_id: str) -> PowerState:
        if instance_id not in self.instances:
            raise NotFound(f"no instance {instance_id}", code="backend_not_found")
        return self.instances[instance_id]

    def start(self, instance_id: str) -> None:
        with self._lock:
            self._maybe_fail("start", transient=True)
            self._require(instance_id)
            self._set(instance_id, PowerState.RUNNING)

    def stop(self, instance_id: str, *, force: bool = False, timeout: float = 60.0) -> None:
        with self._lock:
            self._require(instance_id)
            self._set(instance_id, PowerState.STOPPED)

    def reboot(self, instance_id: str) -> None:
        with self._lock:
            if self._require(instance_id) is not PowerState.RUNNING:
                raise DriverError("domain is not running")

    def resize(
        self,
        instance_id: str,
        *,
        cpus: int | None = None,
        memory_mb: int | None = None,
        disk_gb: int | None = None,
    ) -> None:
        with self._lock:
            self._maybe_fail("resize")
            state = self._require(instance_id)
            spec = self.specs[instance_id]
            running = state is not PowerState.STOPPED
            if running and ((memory_mb and memory_mb < spec.memory_mb) or (cpus and cpus < spec.cpus)):
                raise DriverError("memory and vCPUs shrink only while the VM is stopped")
            if running and memory_mb and (memory_mb - spec.memory_mb) % 128:
                raise Conflict("while the VM runs, memory grows in steps of 128 MiB", code="memory_step")
            if state is not PowerState.STOPPED and cpus and cpus > self.resources.cpus:
                raise Conflict(
                    f"a running VM takes up to {self.resources.cpus} vCPUs", code="instance_running"
                )
            self.specs[instance_id] = dataclasses.replace(
                spec,
                cpus=cpus or spec.cpus,
                memory_mb=memory_mb or spec.memory_mb,
                disk_gb=disk_gb or spec.disk_gb,
            )

    def create_snapshot(self, instance_id: str, snapshot_id: str, *, description: str = "") -> bool:
        with self._lock:
            self._maybe_fail("snapshot")
            running = self._require(instance_id) is PowerState.RUNNING
            self.snapshots.setdefault(instance_id, {})[snapshot_id] = (
                PowerState.RUNNING if running else PowerState.STOPPED
            )
            return running

    def revert_snapshot(self, instance_id: str, snapshot_id: str) -> None:
        with self._lock:
            self._require(instance_id)
            taken = self.snapshots.get(instance_id, {}).get(snapshot_id)
            if taken is None:
                raise NotFound(f"no snapshot {snapshot_id}", code="backend_not_found")
            self._set(instance_id, taken)

    def delete_snapshot(self, instance_id: str, snapshot_id: str) -> None:
        with self._lock:
            self.snapshots.get(instance_id, {}).pop(snapshot_id, None)

    def export_disk(self, instance_id: str, dest: Path) -> None:
        """The simulated disk is the VM's image, as it was (or an empty disk for an ISO install)."""
        with self._lock:
            self._maybe_fail("export_disk")
            if self._require(instance_id) is not PowerState.STOPPED:
                raise Conflict("the VM runs: stop it before copying its disk", code="instance_running")
            spec = self.specs[instance_id]
        if spec.image_path is None or spec.image_format is None:
            qemu_img.create_blank(dest, spec.disk_gb * 1024**3)
        else:
            qemu_img.convert(spec.image_path, dest, spec.image_format)

    def eject_media(self, instance_id: str) -> None:
        with self._lock:
            self._maybe_fail("eject_media")
            self._require(instance_id)
            self.media.pop(instance_id, None)

    def clone(
        self, source_id: str, spec: InstanceSpec, *, linked: bool, snapshot_id: str | None = None
    ) -> None:
        with self._lock:
            self._maybe_fail("clone")
            self._require(source_id)
            if snapshot_id is not None and snapshot_id not in self.snapshots.get(source_id, {}):
                raise NotFound(f"no snapshot {snapshot_id}", code="backend_not_found")
            if spec.id in self.instances:
                raise DriverError(f"instance {spec.id} exists")
            self.specs[spec.id] = spec
            self.instances[spec.id] = PowerState.STOPPED
            self.clones[spec.id] = (source_id, linked, snapshot_id)

    def rename(self, instance_id: str, name: str) -> None:
        with self._lock:
            self._maybe_fail("rename")
            self._require(instance_id)
            self.specs[instance_id] = dataclasses.replace(self.specs[instance_id], name=name)

    def _require_running(self, instance_id: str) -> None:
        if self._require(instance_id) is not PowerState.RUNNING:
            raise InvalidState(f"VM {instance_id} is not running", code="instance_not_running")

    def open_serial_console(self, instance_id: str) -> ConsoleStream:
        with self._lock:
            self._require_running(instance_id)
            console = LoopbackConsole(f"\r\n{self.specs[instance_id].hostname} login: ".encode())
            self.consoles.setdefault(instance_id, []).append(console)
            return console

    def open_vnc(self, instance_id: str) -> ConsoleStream:
        with self._lock:
            self._require_running(instance_id)
            console = LoopbackConsole(b"RFB 003.008\n")
            self.consoles.setdefault(instance_id, []).append(console)
            return console

    def send_keys(self, instance_id: str, chords: Sequence[tuple[int, ...]]) -> None:
        with self._lock:
            self._require_running(instance_id)
            self.typed.setdefault(instance_id, []).extend(chords)

    def screenshot(self, instance_id: str) -> bytes:
        from PIL import Image

        with self._lock:
            self._require_running(instance_id)
        out = io.BytesIO()
        Image.new("RGB", self.SCREEN).save(out, format="PNG")  # a guest whose screen is black
        return out.getvalue()

    def stats(self, instance_id: str) -> InstanceStats:
        """Plausible numbers that move: CPU % (of all vCPUs) and memory wave with time, the byte
        counters grow with the time since start. ``pids`` is 0, as for a real VM."""
        with self._lock:
            self._require_running(instance_id)
            spec = self.specs[instance_id]
            up = time.monotonic() - self.started_at.setdefault(instance_id, time.monotonic())
        limit = spec.memory_mb * 1024 * 1024
        return InstanceStats(
            cpu_percent=round(20.0 + 15.0 * math.sin(up / 3.0), 2),
            online_cpus=spec.cpus,
            memory_bytes=int(limit * (0.35 + 0.05 * math.sin(up / 7.0))),
            memory_limit_bytes=limit,
            network_rx_bytes=int(50_000 + 12_000 * up),
            network_tx_bytes=int(20_000 + 3_000 * up),
            block_read_bytes=int(30_000_000 + 200_000 * up),
            block_write_bytes=int(1_000_000 + 80_000 * up),
            pids=0,
            read_at=datetime.now(UTC),
        )

    def pause(self, instance_id: str) -> None:
        with self._lock:
            if self._require(instance_id) is not PowerState.RUNNING:
                raise DriverError("domain is not running")
            self._set(instance_id, PowerState.PAUSED)

    def resume(self, instance_id: str) -> None:
        with self._lock:
            if self._require(instance_id) is not PowerState.PAUSED:
                raise DriverError("domain is not paused")
            self._set(instance_id, PowerState.RUNNING)

    def delete(self, instance_id: str) -> None:
        with self._lock:
            for console in self.consoles.pop(instance_id, []):
                console.close()
            self.instances.pop(instance_id, None)
            self.specs.pop(instance_id, None)
            self.snapshots.pop(instance_id, None)
            self.media.pop(instance_id, None)
            self.started_at.pop(instance_id, None)
            self.forget_attachments(instance_id)

    def state(self, instance_id: str) -> PowerState:
        with self._lock:
            return self._require(instance_id)

    def reachable(self, instance_id: str, address: str, port: int = 22, timeout: float = 1.0) -> bool:
        """A simulated guest answers while it runs."""
        with self._lock:
            return self.instances.get(instance_id) == PowerState.RUNNING

    def list_instances(self) -> list[InstanceStatus]:
        with self._lock:
            return [InstanceStatus(i, s) for i, s in self.instances.items()]

    def watch(self, callback: StateCallback) -> None:
        self._callbacks.append(callback)

    def ensure_network(self, spec: NetworkSpec) -> None:
        with self._lock:
            self._maybe_fail("ensure_network")
            net = self.networks.setdefault(spec.backend_name, _SimNetwork(spec))
            net.hosts = {h.mac: h for h in spec.dhcp_hosts}

    def delete_network(self, backend_name: str) -> None:
        with self._lock:
            self.networks.pop(backend_name, None)

    def add_dhcp_host(self, backend_name: str, host: DhcpHost) -> None:
        with self._lock:
            if backend_name not in self.networks:
                raise NotFound(f"no network {backend_name}", code="backend_not_found")
            self.networks[backend_name].hosts[host.mac] = host

    def remove_dhcp_host(self, backend_name: str, mac: str) -> None:
        with self._lock:
            if backend_name in self.networks:
                self.networks[backend_name].hosts.pop(mac, None)

    def list_networks(self) -> list[str]:
        with self._lock:
            return list(self.networks)

    def dhcp_hosts(self, backend_name: str) -> list[DhcpHost]:
        with self._lock:
            if backend_name not in self.networks:
                raise NotFound(f"no network {backend_name}", code="backend_not_found")
            return list(self.networks[backend_name].hosts.values())
