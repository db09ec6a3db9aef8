"""Bridges from blocking backend streams to async responses and websockets.

Each open stream parks one thread in a blocking read. Those threads get their own limiter, so a
hundred log followers cannot starve the thread pool that serves ordinary requests; and every
stream is closed when its client leaves, which wakes and frees its thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from cloudlet.api.deps import websocket_context
from cloudlet.drivers.containers import ExecSession, Stream
from cloudlet.errors import CloudletError
from cloudlet.services.context import RequestContext

T = TypeVar("T")
_END = object()
_limiter: anyio.CapacityLimiter | None = None


def stream_limiter() -> anyio.CapacityLimiter:
    global _limiter
    if _limiter is None:  # made lazily: a limiter belongs to the running event loop's library
        _limiter = anyio.CapacityLimiter(1000)
    return _limiter


async def in_stream_thread(fn: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(fn, *args, limiter=stream_limiter())


async def drain(stream: Stream[T]) -> AsyncIterator[T]:
    """Items of ``stream`` as they come; the stream is closed however the iteration ends."""
    try:
        while True:
            item = await in_stream_thread(next, stream, _END)
            if item is _END:
                return
            yield item
    finally:
        stream.close()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def drain_batches(stream: Stream[T], max_items: int = 2000) -> AsyncIterator[list[T]]:
    """Items of ``stream`` in lists of all that arrived while the last list was being sent.

    ``drain`` costs a thread hop per item: fine for a few, but a 100,000-line log then takes
    seconds to arrive. Here one reader thread hands items to the event loop as they come, and
    the consumer takes whatever is waiting at once: a backlog leaves in big lists, a followed
    stream in small ones with no added delay. The reader waits when the consumer lags behind.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    room = threading.Semaphore(max_items * 2)
    stop = threading.Event()

    def hand_over(item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def read() -> None:
        try:
            for item in stream:
                while not room.acquire(timeout=0.5):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                hand_over(item)
        except BaseException as exc:  # handed to the consumer, raised there
            hand_over(_Failed(exc))
        finally:
            hand_over(_END)

    reader = asyncio.ensure_future(in_stream_thread(read))
    try:
        last: Any = None  # _END or a _Failed, once the reader is done
        while last is None:
            batch: list[T] = []
            item = await queue.get()
            while True:
                if item is _END or isinstance(item, _Failed):
                    last = item
                    break
                batch.append(item)
                room.release()
                if len(batch) >= max_items or queue.empty():
                    break
                item = queue.get_nowait()
            if batch:  # what came before a failure still goes out
                yield batch
        if isinstance(last, _Failed):
            raise last.exc
    finally:
        stop.set()
        stream.close()  # wakes a reader blocked on the stream
        reader.add_done_callback(lambda f: f.cancelled() or f.exception())


# Websocket close codes: 4000 + the HTTP status the same problem would have had.
def close_code(err: CloudletError) -> int:
    return 4000 + err.status if 400 <= err.status < 600 else 4500


async def accept_or_refuse(
    websocket: WebSocket,
    open_: Callable[[RequestContext], T],
    *,
    authenticate: Callable[[WebSocket], RequestContext] = websocket_context,
    subprotocols: tuple[str, ...] = (),
) -> T | None:
    """Authenticate (by default as ``websocket_context`` does), run ``open_`` (it resolves the
    target and opens the backend stream) in a thread, then accept, choosing the first of the
    client's offered subprotocols that is in ``subprotocols``. On a domain error the socket is
    closed with a 4xxx code and the problem's detail as the reason, and None is returned."""
    try:
        ctx = await run_in_threadpool(authenticate, websocket)
        opened = await run_in_threadpool(open_, ctx)
    except CloudletError as err:
        await websocket.close(code=close_code(err), reason=f"{err.code}: {err.detail}"[:120])
        return None
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=next((p for p in offered if p in subprotocols), None))
    return opened


async def pump_until_disconnect(
    websocket: WebSocket,
    produce: Callable[[], Coroutine[Any, Any, None]],
    on_message: Callable[[MutableMapping[str, Any]], Awaitable[None]] | None = None,
) -> None:
    """Run ``produce`` (sending to the client) while reading the client's messages; whichever
    ends first ends both. The caller closes its backend stream afterwards."""

    async def receive() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if on_message is not None:
                    await on_message(message)

    producer = asyncio.create_task(produce())
    receiver = asyncio.create_task(receive())
    try:
        await asyncio.wait({producer, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (producer, receiver):
            task.cancel()
        for task in (producer, receiver):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if producer.done() and not producer.cancelled() and producer.exception() is None:
        with contextlib.suppress(Exception):
            await websocket.close(code=1000)


def parse_json(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def serve_terminal(websocket: WebSocket, session: ExecSession) -> None:
    """Bridge a TTY session and an accepted websocket (the protocol xterm.js clients speak):
    binary frames carry terminal bytes both ways; a text frame ``{"type": "resize", "rows": R,
    "cols": C}`` resizes, ``{"type": "input", "data": "..."}`` types text; when the process ends
    the server sends ``{"type": "exit", "code": N}`` and closes with 1000. The session is closed
    however it ends."""

    async def produce() -> None:
        while data := await in_stream_thread(session.read):
            await websocket.send_bytes(data)
        code = await run_in_threadpool(_exit_code, session)
        await websocket.send_json({"type": "exit", "code": code})

    async def on_message(message: MutableMapping[str, Any]) -> None:
        if message.get("bytes"):
            await run_in_threadpool(session.write, message["bytes"])
            return
        request = parse_json(message.get("text") or "") or {}
        if request.get("type") == "resize":
            r, c = int(request.get("rows", 0)), int(request.get("cols", 0))
            if 1 <= r <= 1000 and 1 <= c <= 1000:
                await run_in_threadpool(session.resize, r, c)
        elif request.get("type") == "input" and isinstance(request.get("data"), str):
            await run_in_threadpool(session.write, request["data"].encode())

    try:
        await pump_until_disconnect(websocket, produce, on_message)
    finally:
        await run_in_threadpool(session.close)


def _exit_code(session: ExecSession) -> int | None:
    """Backends record the exit code a moment after the output ends."""
    for _ in range(40):
        code = session.exit_code()
        if code is not None:
            return code
        time.sleep(0.05)
    return None
