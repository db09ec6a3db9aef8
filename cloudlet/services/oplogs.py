"""Line logs of operations (image builds, pulls), kept as files so a long build's output never
sits in memory, streamed live to whoever follows it and kept for reading after it ends."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from cloudlet.services.events import Event, EventBus

_CHUNK = 64 * 1024


class OperationLogs:
    def __init__(self, folder: Path, bus: EventBus) -> None:
        self.folder = folder
        self.bus = bus
        self._changed = threading.Condition()

    def path(self, op_id: str) -> Path:
        return self.folder / f"{op_id}.log"

    def writer(self, op_id: str, workspace_id: str) -> LogWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        return LogWriter(self, op_id, workspace_id)

    def _appended(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def end(self, op_id: str) -> None:
        """Wake followers: the operation is about to be final."""
        self._appended()

    def exists(self, op_id: str) -> bool:
        return self.path(op_id).is_file()

    def read(self, op_id: str, *, follow: bool, is_final: Callable[[], bool]) -> Iterator[bytes]:
        """The log from its start; with ``follow``, then what is appended until the operation ends."""
        path = self.path(op_id)
        offset = 0
        while True:
            if path.is_file():
                with path.open("rb") as fh:
                    fh.seek(offset)
                    while chunk := fh.read(_CHUNK):
                        offset += len(chunk)
                        yield chunk
            if not follow or is_final():
                # one last read: lines written between the read above and the end
                if path.is_file() and path.stat().st_size > offset:
                    with path.open("rb") as fh:
                        fh.seek(offset)
                        yield from iter(lambda: fh.read(_CHUNK), b"")
                return
            with self._changed:
                self._changed.wait(timeout=1.0)


class LogWriter:
    """Appends lines to one operation's log and announces each on the event bus."""

    def __init__(self, logs: OperationLogs, op_id: str, workspace_id: str) -> None:
        self._logs = logs
        self.op_id = op_id
        self.workspace_id = workspace_id
        self._fh = logs.path(op_id).open("ab", buffering=0)
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode("utf-8", "replace")
        with self._lock:
            self._fh.write(data)
        self._logs._appended()
        self._logs.bus.publish(Event("operation.log", self.workspace_id, {"id": self.op_id, "line": line}))

    def close(self) -> None:
        with self._lock:
            self._fh.close()
        self._logs.end(self.op_id)
