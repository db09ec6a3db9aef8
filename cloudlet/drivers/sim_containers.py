"""An in-memory container driver for fast unit tests: containers, images and host ports are
tracked like the engine does (a missing image fails create, a taken host port fails start). It
runs no processes, so exec is unsupported and logs hold only what a test writes into them. The
integration suite proves the same flows on the real Docker engine."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from cloudlet.drivers.base import (
    DriverCapabilities,
    DriverInfo,
    HostResources,
    InstanceSpec,
    InstanceStatus,
    PowerState,
    StateCallback,
)
from cloudlet.drivers.containers import (
    ContainerDetails,
    ContainerDriver,
    ContainerImage,
    ContainerStats,
    ExecResult,
    ExecSession,
    ProgressCallback,
    RegistryImage,
    Stream,
)
from cloudlet.errors import Conflict, InUse, Invalid, NotFound, RegistryUnreachable, Unsupported


@dataclass
class _SimContainer:
    spec: InstanceSpec
    short_id: str
    image_id: str
    state: PowerState = PowerState.STOPPED
    logs: list[bytes] = field(default_factory=list)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


class SimContainerDriver(ContainerDriver):
    name = "sim-containers"
    capabilities = DriverCapabilities(pause=True)

    def __init__(
        self, images: tuple[str, ...] = ("local/busybox:latest",), registry: tuple[str, ...] = ()
    ) -> None:
        self._lock = threading.Lock()
        self.containers: dict[str, _SimContainer] = {}
        self.images: dict[str, ContainerImage] = {}  # tag -> the image it names (tags share ids)
        self.registry = set(registry)  # refs a pull can fetch (none: no registry answers)
        self._callbacks: list[StateCallback] = []
        for ref in images:
            self.add_image(ref)

    def add_image(self, ref: str, size: int = 2_000_000) -> ContainerImage:
        digest = "sha256:" + hashlib.sha256(ref.encode()).hexdigest()
        image = ContainerImage(digest, (ref,), size, datetime.now(UTC))
        self.images[ref] = image
        return image

    def _whole(self, image: ContainerImage) -> ContainerImage:
        """The image with every tag that names it (the engine lists an image once)."""
        tags = tuple(sorted(t for t, i in self.images.items() if i.id == image.id))
        return replace(image, tags=tags)

    def _container(self, instance_id: str) -> _SimContainer:
        try:
            return self.containers[instance_id]
        except KeyError:
            raise NotFound(f"no container for instance {instance_id}", code="backend_not_found") from None

    def _set(self, instance_id: str, state: PowerState) -> None:
        self.containers[instance_id].state = state
        for cb in self._callbacks:
            cb(instance_id, state)

    def info(self) -> DriverInfo:
        return DriverInfo(self.name, "1", ok=True)

    def host_resources(self) -> HostResources:
        return HostResources(cpus=8, memory_total_mb=32768, memory_available_mb=32768)

    def create(self, spec: InstanceSpec) -> None:
        assert spec.container is not None
        with self._lock:
            if spec.container.image not in self.images:
                raise Invalid(f"no such image: {spec.container.image}", code="unknown_image")
            short = hashlib.sha256(spec.id.encode()).hexdigest()[:12]
            self.containers[spec.id] = _SimContainer(spec, short, self.images[spec.container.image].id)

    def start(self, instance_id: str) -> None:
        with self._lock:
            me = self._container(instance_id)
            assert me.spec.container is not None
            wanted = {(p.host, p.protocol) for p in me.spec.container.ports}
            for other_id, other in self.containers.items():
                if other_id == instance_id or other.state is not PowerState.RUNNING:
                    continue
                assert other.spec.container is not None
                taken = wanted & {(p.host, p.protocol) for p in other.spec.container.ports}
                if taken:
                    raise Conflict(f"port is already allocated: {sorted(taken)}", code="port_in_use")
            self._set(instance_id, PowerState.RUNNING)

    def stop(self, instance_id: str, *, force: bool = False, timeout: float = 60.0) -> None:
        with self._lock:
            self._container(instance_id)
            self._set(instance_id, PowerState.STOPPED)

    def reboot(self, instance_id: str) -> None:
        with self._lock:
            self._container(instance_id)
            self._set(instance_id, PowerState.RUNNING)

    def pause(self, instance_id: str) -> None:
        with self._lock:
            if self._container(instance_id).state is not PowerState.RUNNING:
                raise Conflict("container is not running", code="backend_conflict")
            self._set(instance_id, PowerState.PAUSED)

    def resume(self, instance_id: str) -> None:
        with self._lock:
            if self._container(instance_id).state is not PowerState.PAUSED:
                raise Conflict("container is not paused", code="backend_conflict")
            self._set(instance_id, PowerState.RUNNING)

    def kill(self, instance_id: str, signal: str = "SIGKILL") -> None:
        with self._lock:
            if self._container(instance_id).state is PowerState.STOPPED:
                raise Conflict("container is not running", code="backend_conflict")
            self._set(instance_id, PowerState.STOPPED)

    def delete(self, instance_id: str) -> None:
        with self._lock:
            self.containers.pop(instance_id, None)

    def state(self, instance_id: str) -> PowerState:
        with self._lock:
            return self._container(instance_id).state

    def list_instances(self) -> list[InstanceStatus]:
        with self._lock:
            return [InstanceStatus(i, c.state) for i, c in self.containers.items()]

    def watch(self, callback: StateCallback) -> None:
        self._callbacks.append(callback)

    def details(self, instance_id: str, *, size: bool = False) -> ContainerDetails:
        with self._lock:
            c = self._container(instance_id)
            assert c.spec.container is not None
            image = next((i for i in self.images.values() if i.id == c.image_id), None)
            return ContainerDetails(
                short_id=c.short_id,
                status={PowerState.RUNNING: "running", PowerState.PAUSED: "paused"}.get(c.state, "exited"),
                exit_code=0,
                started_at=c.created if c.state is PowerState.RUNNING else None,
                finished_at=None,
                ports=c.spec.container.ports,
                ip=c.spec.nics[0].ip if c.spec.nics else None,
                size_rw=sum(len(chunk) for chunk in c.logs) if size else None,
                size_root_fs=(image.size if image else 0) if size else None,
            )

    def logs(
        self,
        instance_id: str,
        *,
        tail: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        timestamps: bool = False,
        follow: bool = False,
    ) -> Stream[bytes]:
        with self._lock:
            chunks = list(self._container(instance_id).logs)
        return Stream(iter(chunks[-tail:] if tail else chunks))

    def exec_run(
        self,
        instance_id: str,
        command: list[str],
        *,
        tty: bool = False,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
        max_output: int = 1 << 20,
    ) -> ExecResult:
        raise Unsupported("the simulated container driver runs no processes")

    def exec_interactive(
        self,
        instance_id: str,
        command: list[str],
        *,
        rows: int = 24,
        cols: int = 80,
        env: dict[str, str] | None = None,
        user: str | None = None,
    ) -> ExecSession:
        raise Unsupported("the simulated container driver runs no processes")

    def stats(self, instance_id: str) -> ContainerStats:
        raise Unsupported("the simulated container driver measures nothing")

    def stats_stream(self, instance_id: str) -> Stream[ContainerStats]:
        raise Unsupported("the simulated container driver measures nothing")

    def list_images(self) -> list[ContainerImage]:
        with self._lock:
            users = [c.image_id for c in self.containers.values()]
            whole = {i.id: self._whole(i) for i in self.images.values()}
            out = [replace(i, in_use=users.count(i.id)) for i in whole.values()]
        return sorted(out, key=lambda i: i.created, reverse=True)

    def image(self, ref: str) -> ContainerImage:
        with self._lock:
            for key, image in self.images.items():
                if ref in (key, image.id):
                    return self._whole(image)
        raise NotFound(f"no such image: {ref}", code="backend_not_found")

    def image_users(self, image_id: str) -> list[str | None]:
        with self._lock:
            return [c.spec.workspace_id for c in self.containers.values() if c.image_id == image_id]

    def pull_image(self, ref: str, progress: ProgressCallback) -> ContainerImage:
        if ref not in self.registry:
            raise RegistryUnreachable(f"pulling {ref}: the simulated driver has no registry")
        progress(f"{ref}: Pull complete")
        with self._lock:
            return self._whole(self.images.get(ref) or self.add_image(ref))

    def search_images(self, term: str, limit: int = 25) -> list[RegistryImage]:
        raise RegistryUnreachable(f"searching {term!r}: the simulated driver has no registry")

    def tag_image(self, image_id: str, ref: str) -> None:
        image = self.image(image_id)
        with self._lock:
            self.images[ref] = image

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        image = self.image(ref)
        with self._lock:
            refs = [ref] if ref in self.images else [t for t, i in self.images.items() if i.id == image.id]
            last = len(refs) == len([t for t, i in self.images.items() if i.id == image.id])
            in_use = any(c.image_id == image.id for c in self.containers.values())
            if last and in_use and not force:
                raise InUse(f"image {ref} is being used by a container", code="image_in_use")
            for key in refs:
                del self.images[key]

    def prune_images(self) -> tuple[list[str], int]:
        return [], 0

    def build_image(
        self, context: Path, tags: list[str], log: ProgressCallback, *, dockerfile: str = "Dockerfile"
    ) -> ContainerImage:
        raise Unsupported("the simulated container driver cannot build images")
