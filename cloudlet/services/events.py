"""The in-process event bus. Any thread may publish; subscribers are asyncio queues that websocket
handlers drain. Slow subscribers lose their oldest events rather than slowing publishers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Event:
    type: str  # e.g. "instance.state", "operation.updated"
    workspace_id: str
    data: dict[str, Any]
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "workspace_id": self.workspace_id,
            "time": self.time.isoformat(),
            "data": self.data,
        }


class Subscription:
    def __init__(
        self, bus: EventBus, loop: asyncio.AbstractEventLoop, workspaces: set[str] | None, maxsize: int
    ):
        self._bus = bus
        self.loop = loop
        self.workspaces = workspaces  # None: every workspace
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)

    def wants(self, event: Event) -> bool:
        return self.workspaces is None or event.workspace_id in self.workspaces

    def _put(self, event: Event) -> None:
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(event)

    async def get(self) -> Event:
        return await self.queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self, workspaces: set[str] | None = None, maxsize: int = 1000) -> Subscription:
        """Subscribe from inside a running event loop."""
        sub = Subscription(self, asyncio.get_running_loop(), workspaces, maxsize)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, event: Event) -> None:
        """Thread-safe: hands the event to each interested subscriber's loop."""
        with self._lock:
            subs = [s for s in self._subs if s.wants(event)]
        for sub in subs:
            with contextlib.suppress(RuntimeError):  # the subscriber's loop is closed: it is leaving
                sub.loop.call_soon_threadsafe(sub._put, event)
