"""What a container backend offers beyond the compute contract: details, logs, exec, stats,
images and builds. Docker implements it; the sim driver implements it for fast tests.

Everything that can be large (logs, build output, pull progress) is an iterator, so the API can
stream it without holding it in memory.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from cloudlet.drivers.base import ComputeDriver, InstanceStats, NetworkSpec, PortSpec

T = TypeVar("T")


class Stream(Generic[T]):
    """An iterator over a backend stream that another thread may close: a websocket handler
    closes it when its client leaves, which unblocks the thread waiting for the next item."""

    def __init__(self, items: Iterator[T], close: Callable[[], None] = lambda: None) -> None:
        self._items = items
        self._close = close
        self._lock = threading.Lock()
        self.closed = False

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        if self.closed:
            raise StopIteration
        return next(self._items)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self._close()


@dataclass(frozen=True)
class ContainerDetails:
    short_id: str
    status: str  # the backend's own words: "running", "exited", "paused"...
    exit_code: int | None
    started_at: datetime | None
    finished_at: datetime | None
    ports: tuple[PortSpec, ...]
    ip: str | None
    size_rw: int | None = None  # bytes written by the container
    size_root_fs: int | None = None  # image plus writes


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: bytes
    truncated: bool = False


# A container's sample: CPU % of one CPU (200.0 is two busy CPUs), memory without the page cache.
ContainerStats = InstanceStats


@dataclass(frozen=True)
class ContainerImage:
    id: str
    tags: tuple[str, ...]
    size: int
    created: datetime
    in_use: int = 0  # containers (any state) made from it
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RegistryImage:
    name: str
    description: str
    stars: int
    official: bool


class ExecSession(abc.ABC):
    """An interactive exec with a TTY: raw bytes both ways plus terminal resizes."""

    @abc.abstractmethod
    def read(self, size: int = 65536) -> bytes:
        """Block for output; b"" when the process has ended."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def resize(self, rows: int, cols: int) -> None: ...

    @abc.abstractmethod
    def exit_code(self) -> int | None:
        """The exit code once the process has ended, else None."""

    @abc.abstractmethod
    def close(self) -> None: ...


ProgressCallback = Callable[[str], None]


class BuildFailed(Exception):
    """A build step failed; ``step`` is the Dockerfile instruction, ``output`` its last lines."""

    def __init__(self, message: str, step: str | None, output: str) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        self.output = output


class ContainerDriver(ComputeDriver):
    @abc.abstractmethod
    def kill(self, instance_id: str, signal: str = "SIGKILL") -> None:
        """Send a signal to the container's main process."""

    @abc.abstractmethod
    def details(self, instance_id: str, *, size: bool = False) -> ContainerDetails:
        """Backend facts; ``size`` asks for the disk use too (slow: the backend walks the layer)."""

    @abc.abstractmethod
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
        """The output of the container, as it comes: chunks of stdout and stderr, in order.
        ``follow`` keeps the iterator open for new output until the container stops."""

    @abc.abstractmethod
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
        """Run a command to its end; output past ``max_output`` bytes is dropped (``truncated``)."""

    @abc.abstractmethod
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
        """Start a command with a TTY and stdin attached."""

    @abc.abstractmethod
    def stats(self, instance_id: str) -> ContainerStats:
        """One sample of resource use (CPU % is measured over the backend's sampling interval)."""

    @abc.abstractmethod
    def stats_stream(self, instance_id: str) -> Stream[ContainerStats]:
        """A sample about every second until the container stops or the iterator is closed."""

    # -- images ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def list_images(self) -> list[ContainerImage]: ...

    @abc.abstractmethod
    def image(self, ref: str) -> ContainerImage:
        """One local image by tag or id; ``NotFound`` when there is none."""

    @abc.abstractmethod
    def pull_image(self, ref: str, progress: ProgressCallback) -> ContainerImage:
        """Pull from a registry; ``RegistryUnreachable`` when no registry answers."""

    @abc.abstractmethod
    def search_images(self, term: str, limit: int = 25) -> list[RegistryImage]: ...

    @abc.abstractmethod
    def image_users(self, image_id: str) -> list[str | None]:
        """The workspace of every container (any state) made from the image ``image_id``: a
        workspace id for this deployment's containers, None for anyone else's."""

    @abc.abstractmethod
    def tag_image(self, image_id: str, ref: str) -> None:
        """Give the image ``image_id`` the tag ``ref`` (moved from any image that had it)."""

    @abc.abstractmethod
    def remove_image(self, ref: str, *, force: bool = False) -> None:
        """Untag ``ref``, or remove the image when it is its last name or its id. ``InUse`` when
        that would remove an image a container uses (unless ``force``)."""

    @abc.abstractmethod
    def prune_images(self) -> tuple[list[str], int]:
        """Remove dangling images; returns the removed ids and the bytes reclaimed."""

    @abc.abstractmethod
    def build_image(
        self, context: Path, tags: list[str], log: ProgressCallback, *, dockerfile: str = "Dockerfile"
    ) -> ContainerImage:
        """Build from a folder, tagged with ``tags`` (none: an untagged image, known by its id);
        each line of build output goes to ``log`` as it comes. Raises ``BuildFailed`` naming the
        failing step."""

    def ports_in_use(self, ports: list[PortSpec]) -> list[PortSpec]:
        """The host ports of ``ports`` that something holds now (best effort: the engine has the
        last word at start). Lets a create fail at once instead of in its operation."""
        return []

    def sizes(self) -> dict[str, tuple[int | None, int | None]]:
        """Instance id -> (bytes written, bytes of image plus writes) for every container."""
        return {}

    # -- networks --------------------------------------------------------------------------------
    def attach_network(self, spec: NetworkSpec) -> None:
        """Make a cloudlet network joinable by containers (idempotent)."""

    def detach_network(self, backend_name: str) -> None:
        """Forget a cloudlet network; succeeds when it was never attached."""
