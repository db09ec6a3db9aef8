"""drain_batches: a backlog leaves in big lists, in order, nothing lost; a failure reaches the
consumer; a consumer that leaves closes the stream."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from cloudlet.api.streams import drain_batches
from cloudlet.drivers.containers import Stream


def collect(stream: Stream[bytes], limit: int | None = None) -> list[list[bytes]]:
    async def run() -> list[list[bytes]]:
        out: list[list[bytes]] = []
        async for batch in drain_batches(stream, max_items=500):
            out.append(batch)
            if limit is not None and len(out) >= limit:
                break
        return out

    return asyncio.run(run())


def test_a_backlog_arrives_whole_in_order_and_in_few_lists() -> None:
    lines = [f"line-{i}\n".encode() for i in range(20_000)]
    batches = collect(Stream(iter(lines)))
    assert [line for batch in batches for line in batch] == lines
    assert all(len(b) <= 500 for b in batches)
    assert len(batches) < 2_000  # one per line would be 20,000


def test_a_failing_stream_raises_in_the_consumer_after_what_it_sent() -> None:
    def items() -> Iterator[bytes]:
        yield b"one\n"
        yield b"two\n"
        raise OSError("engine went away")

    got: list[bytes] = []

    async def run() -> None:
        async for batch in drain_batches(Stream(items())):
            got.extend(batch)

    with pytest.raises(OSError, match="engine went away"):
        asyncio.run(run())
    assert got == [b"one\n", b"two\n"]  # the lines before the failure were not lost


def test_a_consumer_leaving_closes_a_followed_stream() -> None:
    closed = threading.Event()

    def follow() -> Iterator[bytes]:
        yield b"first\n"
        closed.wait(10)  # a followed log blocks until there is more, or until it is closed

    stream = Stream(follow(), close=closed.set)
    assert collect(stream, limit=1) == [[b"first\n"]]
    assert closed.wait(5) and stream.closed
