"""Issue 13, finding 2, on a real server process: 500 MB sent without a token, as text/plain to a
JSON route or as an upload, is refused at once (413 or 401) and the server's memory stays flat;
with a token, the upload route still streams a big body to disk.

The bodies come from one reused buffer on a raw socket (never built in memory), sent by a thread
while the answer is read, as a client that does not wait for a refusal would."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

from tests.helpers import eventually
from tests.integration.conftest import Server, running_server, traversable_tmp

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
TOTAL = 500 * MiB
MAX_GROWTH = 40 * MiB  # "a few tens of MB"; reading the 500 MB once took 970 MB


@pytest.fixture(scope="module")
def server(libvirt_conn) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    with running_server(libvirt_conn, traversable_tmp("server-bodies-")) as s:
        yield s


@dataclass
class Answer:
    status: int | None
    seconds: float
    sent: int  # body bytes the server let in before the answer (socket buffers included)
    rss_growth: int  # the server's peak RSS while it lasted, above where it started


class PeakRss:
    """Samples a process's RSS on a thread until stopped; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.start = self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def growth(self) -> int:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        return self.peak - self.start


def send(
    server: Server,
    method: str,
    path: str,
    headers: dict[str, str],
    *,
    total: int = TOTAL,
    chunked: bool = False,
    timeout: float = 120,
) -> Answer:
    """Send ``total`` bytes of body while reading the answer; stop sending once it came."""
    assert server.proc is not None
    rss = PeakRss(server.proc.pid)
    sock = socket.create_connection(("127.0.0.1", server.port))
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    block = b"a" * MiB
    frame = f"{len(block):x}\r\n".encode() + block + b"\r\n" if chunked else block
    answered = threading.Event()
    sent = [0]

    def pump() -> None:
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            while sent[0] < total and not answered.is_set():
                sock.sendall(frame)
                sent[0] += len(block)
            if chunked and not answered.is_set():
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server closed the connection: expected after a refusal
            pass

    started = time.monotonic()
    sender = threading.Thread(target=pump, daemon=True)
    sender.start()
    sock.settimeout(timeout)
    head = b""
    try:
        while b"\r\n" not in head:
            got = sock.recv(4096)
            if not got:
                break
            head += got
    except OSError:
        pass
    seconds = time.monotonic() - started
    answered.set()
    with contextlib.suppress(OSError):  # the server may have closed it already
        sock.shutdown(socket.SHUT_RDWR)  # wakes a sender blocked on a full buffer
    sock.close()
    sender.join(30)
    parts = head.split()
    status = int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") else None
    return Answer(status, seconds, sent[0], rss.growth())


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_500_mb_of_text_to_a_json_route_is_refused_unread(server: Server, chunked: bool) -> None:
    answer = send(server, "POST", "/api/v1/images", {"Content-Type": "text/plain"}, chunked=chunked)
    assert answer.status == 413, answer
    assert answer.seconds < 30, answer
    assert answer.sent < 200 * MiB, answer  # the server stopped taking it long before the end
    assert answer.rss_growth < MAX_GROWTH, answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "method,path",
    [("POST", "/api/v1/images/upload?name=big"), ("PUT", "/api/v1/projects/p/files/big.bin")],
    ids=["image-upload", "project-file"],
)
def test_500_mb_to_an_upload_route_without_a_token_is_a_401_unread(
    server: Server, method: str, path: str, chunked: bool
) -> None:
    for auth in ({}, {"Authorization": "Bearer clt_not-a-token"}):
        headers = {"Content-Type": "application/octet-stream", **auth}
        answer = send(server, method, path, headers, chunked=chunked)
        assert answer.status == 401, answer
        assert answer.seconds < 30, answer
        assert answer.sent < 200 * MiB, answer
        assert answer.rss_growth < MAX_GROWTH, answer


def test_with_a_token_a_big_upload_still_streams_to_disk(server: Server) -> None:
    """300 MB of a raw disk (zeros with a boot signature) with a token: all of it is stored, and
    memory does not grow with it."""
    total = 300 * MiB
    assert server.proc is not None
    rss = PeakRss(server.proc.pid)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        (
            "POST /api/v1/images/upload?name=bigraw&format=raw HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {server.token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
        ).encode()
    )
    first = bytearray(MiB)
    first[510:512] = b"\x55\xaa"  # an MBR boot signature: a raw disk
    sock.sendall(first)
    zeros = bytes(MiB)
    for _ in range(total // MiB - 1):
        sock.sendall(zeros)
    sock.settimeout(120)
    head = sock.recv(4096)
    sock.close()
    growth = rss.growth()
    assert head.split()[1] == b"202", head
    assert growth < MAX_GROWTH, growth

    def ready() -> dict[str, object] | None:
        with server.client() as c:
            image = c.image("bigraw")
        return image if image["status"] == "ready" else None

    image = eventually(ready, timeout=120, what="the uploaded image to be ready")
    assert image["file_size"] == total
    with server.client() as c:
        c.request("DELETE", "/images/bigraw", params={"wait": 60})
