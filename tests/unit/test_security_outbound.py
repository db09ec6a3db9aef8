"""Issue 13, finding 1: image URL imports must not reach internal addresses (SSRF), must not tell
a refused address, a closed port, a silent port and an HTTP error apart (a port scanner), and
must end within a total time limit.

The address rules are tested on the policy itself and with name resolution and connecting
replaced (no packet leaves); end to end only loopback listeners are used, and they prove that no
connection arrived when the import was refused."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpcore
import pytest

from cloudlet.config import Settings
from cloudlet.errors import Invalid
from cloudlet.services import image_download
from cloudlet.services.image_download import UNREACHABLE, Downloader
from cloudlet.services.outbound import OutboundPolicy, parse_address, refusal
from tests.helpers import free_port
from tests.unit.conftest import SimCloud, sim_cloud
from tests.unit.test_images import assert_nothing_stored

# -- the address policy: judged on the function, never by connecting ---------------------------

REFUSED = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",  # shared address space (CGNAT)
    "100.127.255.254",
    "127.0.0.1",
    "127.255.0.9",
    "169.254.169.254",  # cloud metadata
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.8",
    "192.0.2.10",  # documentation
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",  # benchmarking
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.7",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",  # broadcast
    "::",
    "::1",
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.1.2.3",
    "::ffff:169.254.169.254",
    "::ffff:7f00:1",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",  # local-use NAT64
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::",  # 6to4 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:db8::1",  # documentation
    "3fff::1",
    "100::1",  # discard-only
    "fc00::1",  # unique local
    "fd12:3456::1",
    "fe80::1",  # link-local
    "fe80::1%eth0",
    "fec0::1",  # site-local
    "ff02::1",  # multicast
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2a00:1450:4001::200e", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_internal_addresses_are_refused(address: str) -> None:
    assert refusal(parse_address(address)) is not None
    assert OutboundPolicy().refusal("example.org", address) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(parse_address(address)) is None
    assert OutboundPolicy().refusal("example.org", address) is None


def test_the_allow_list_opens_chosen_hosts_and_networks_only() -> None:
    policy = OutboundPolicy.from_entries(["Mirror.LAN.", "10.9.0.0/16", "127.0.0.2", "fd00:1::/64"])
    assert policy.refusal("mirror.lan", "10.1.1.1") is None  # the host name, whatever it resolves to
    assert policy.refusal("MIRROR.lan.", "192.168.0.4") is None
    assert policy.refusal("other.lan", "10.9.200.1") is None  # inside the network
    assert policy.refusal("other.lan", "::ffff:10.9.0.1") is None  # the same address mapped to IPv6
    assert policy.refusal("x", "127.0.0.2") is None
    assert policy.refusal("x", "fd00:1::5") is None
    assert policy.refusal("other.lan", "10.10.0.1") == "private"
    assert policy.refusal("x", "127.0.0.1") == "loopback"
    assert policy.refusal("x", "fd00:2::5") is not None
    assert policy.refusal("mirror.lan.evil.com", "10.1.1.1") is not None


@pytest.mark.parametrize("entry", ["", "bad host", "http://mirror.lan", "10.0.0.0/33", "a..b", "1.2.3"])
def test_a_bad_allow_list_entry_stops_the_settings(entry: str) -> None:
    with pytest.raises(ValueError):
        Settings(outbound_allow=[entry])


def test_the_old_link_local_switch_still_works() -> None:
    old = Downloader.from_settings(Settings(image_url_block_link_local=False)).policy
    assert old.refusal("x", "169.254.169.254") is None and old.refusal("x", "fe80::1") is None
    assert old.refusal("x", "127.0.0.1") == "loopback"  # everything else stays refused
    assert Downloader.from_settings(Settings()).policy.refusal("x", "169.254.169.254") is not None


# -- the connection guard, with resolving and connecting replaced -------------------------------


class FakeNet:
    """``getaddrinfo`` answers from a table, and connects are recorded instead of made."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]], peer: str | None = None):
        self.names, self.peer, self.connects = names, peer, list[str]()
        monkeypatch.setattr(image_download.socket, "getaddrinfo", self.getaddrinfo)
        monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", self.connect_tcp)

    def getaddrinfo(self, host: str, port: Any, *args: Any, **kw: Any) -> list[Any]:
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in self.names[host]]

    def connect_tcp(self, host: str, port: int, *args: Any, **kw: Any) -> Any:
        self.connects.append(host)
        return httpcore.MockStream([], http2=False) if self.peer is None else _PeerStream(self.peer)


class _PeerStream(httpcore.MockStream):
    def __init__(self, peer: str) -> None:
        super().__init__([])
        self.peer, self.closed = peer, False

    def get_extra_info(self, info: str) -> Any:
        return (self.peer, 80) if info == "server_addr" else None

    def close(self) -> None:
        self.closed = True


def failing(url: str, tmp_path: Path, downloader: Downloader | None = None) -> Invalid:
    with pytest.raises(Invalid) as err:
        (downloader or Downloader()).fetch(url, tmp_path / "dl")
    return err.value


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.5"], ["169.254.169.254"], ["8.8.8.8", "127.0.0.1"], ["1.1.1.1", "::ffff:192.168.0.1"]],
)
def test_a_name_with_any_internal_address_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, addresses: list[str]
) -> None:
    net = FakeNet(monkeypatch, {"images.example.org": addresses})
    err = failing("http://images.example.org/disk.qcow2", tmp_path)
    assert (err.code, err.detail) == ("download_failed", UNREACHABLE)
    assert net.connects == []  # not even the public address was tried


def test_the_address_really_reached_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    net = FakeNet(monkeypatch, {"images.example.org": ["8.8.8.8"]}, peer="127.0.0.1")
    err = failing("http://images.example.org/disk.qcow2", tmp_path)
    assert (err.code, err.detail) == ("download_failed", UNREACHABLE)
    assert net.connects == ["8.8.8.8"]  # the checked address is what is connected to (pinned)


def test_a_name_that_does_not_resolve_gets_the_same_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    FakeNet(monkeypatch, {})
    err = failing("http://user:pw@nowhere.example.org/x?sig=SECRET", tmp_path)
    assert (err.code, err.detail) == ("download_failed", UNREACHABLE)
    logged = caplog.text
    assert "does not resolve" in logged and "http://nowhere.example.org/x" in logged
    assert "SECRET" not in logged and "pw" not in logged  # no credentials of the URL in the log


# -- end to end, on loopback only ----------------------------------------------------------------


class Listener:
    """A TCP port that accepts nothing: a connection that reaches it waits in its backlog, where
    ``arrived`` finds it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.host, self.port = host, self.sock.getsockname()[1]

    def url(self, path: str = "disk.qcow2", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}/{path}"

    def arrived(self) -> int:
        self.sock.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    port = Listener()
    yield port
    port.close()


class Redirector(http.server.BaseHTTPRequestHandler):
    """/redirect?to=URL answers 302 to URL; /missing answers 404; /loop redirects to itself."""

    def do_GET(self) -> None:
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Web:
    host: str
    port: int

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path}"


@contextmanager
def web(host: str = "127.0.0.1") -> Iterator[Web]:
    server = http.server.ThreadingHTTPServer((host, 0), Redirector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Web(host, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def serve_raw(answer: Callable[[socket.socket], None]) -> tuple[int, Callable[[], None]]:
    """A loopback port whose every connection is handed to ``answer`` (after the request is read)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    answer(conn)

    threading.Thread(target=serve, daemon=True).start()

    def close() -> None:
        stop.set()
        sock.close()

    return sock.getsockname()[1], close


def import_url(sim: SimCloud, url: str, name: str = "net") -> dict[str, Any]:
    resp = sim.post("/api/v1/images", params={"wait": 60}, json={"name": name, "url": url})
    assert resp.status_code in (200, 202), resp.text
    op: dict[str, Any] = resp.json()
    assert op["status"] == "failed", op
    return op


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[SimCloud]:
    """A server with the default policy: nothing internal allowed."""
    with sim_cloud(tmp_path) as sim:
        yield sim


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "127.1", "2130706433"])
def test_loopback_by_address_or_name_is_refused_and_never_contacted(
    strict: SimCloud, listener: Listener, host: str
) -> None:
    op = import_url(strict, listener.url(host=host))
    assert (op["error"]["code"], op["error"]["detail"]) == ("download_failed", UNREACHABLE)
    assert listener.arrived() == 0
    assert_nothing_stored(strict)


def test_a_redirect_from_an_allowed_source_to_an_internal_one_is_refused(
    tmp_path: Path, listener: Listener
) -> None:
    with sim_cloud(tmp_path, outbound_allow=["127.0.0.2"]) as sim, web("127.0.0.2") as allowed:
        op = import_url(sim, allowed.url(f"redirect?to={listener.url()}"))
        assert (op["error"]["code"], op["error"]["detail"]) == ("download_failed", UNREACHABLE)
        assert listener.arrived() == 0
        assert_nothing_stored(sim)


def test_every_failure_looks_the_same(tmp_path: Path, listener: Listener) -> None:
    """Refused address, closed port, a port that resets or says nothing, a 404, garbage, a
    redirect loop: one error, word for word. Only loopback is allowed here (127.0.0.1)."""

    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")

    reset_port, close_reset = serve_raw(reset)
    garbage_port, close_garbage = serve_raw(lambda c: c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n"))
    closed = free_port()
    try:
        with (
            sim_cloud(tmp_path, outbound_allow=["127.0.0.1"], image_download_timeout=1) as sim,
            web() as site,
        ):
            urls = {
                "refused address": f"http://127.0.0.2:{site.port}/disk.qcow2",
                "closed port": f"http://127.0.0.1:{closed}/disk.qcow2",
                "silent port": listener.url(),
                "reset": f"http://127.0.0.1:{reset_port}/disk.qcow2",
                "not http": f"http://127.0.0.1:{garbage_port}/disk.qcow2",
                "404": site.url("missing.qcow2"),
                "redirect loop": site.url("loop"),
                "https to plain http": f"https://127.0.0.1:{site.port}/disk.qcow2",
            }
            errors = {
                why: import_url(sim, url, name=f"n{i}")["error"] for i, (why, url) in enumerate(urls.items())
            }
    finally:
        close_reset()
        close_garbage()
    expected = {"code": "download_failed", "status": 422, "detail": UNREACHABLE}
    assert errors == dict.fromkeys(urls, expected)


def test_allow_listed_loopback_is_downloaded(tmp_path: Path, qcow2_image: Path) -> None:
    with sim_cloud(tmp_path, outbound_allow=["localhost"]) as sim:
        root = tmp_path / "www"
        root.mkdir()
        (root / "disk.qcow2").write_bytes(qcow2_image.read_bytes())
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a: None  # type: ignore[attr-defined]
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://localhost:{server.server_address[1]}/disk.qcow2"
            resp = sim.post("/api/v1/images", params={"wait": 60}, json={"name": "net", "url": url})
            assert resp.json()["status"] == "succeeded", resp.text
            # the same port by address is not the allowed host name
            op = import_url(sim, f"http://127.0.0.1:{server.server_address[1]}/disk.qcow2", name="net2")
            assert op["error"]["code"] == "download_failed"
        finally:
            server.shutdown()
            server.server_close()


def test_the_settings_reach_the_downloader(tmp_path: Path) -> None:
    """Cloud.build once built the images service twice, the second time without these settings."""
    with sim_cloud(
        tmp_path, image_download_timeout=7, image_download_max_seconds=99, outbound_allow=["mirror.lan"]
    ) as sim:
        downloader = sim.cloud.images.downloader
        assert (downloader.timeout, downloader.max_seconds) == (7, 99)
        assert downloader.policy.allow_hosts == frozenset({"mirror.lan"})


# -- the total time limit -------------------------------------------------------------------------


def drip(head: bytes) -> Callable[[socket.socket], None]:
    """Send ``head``, then one byte every 0.2 s for up to a minute (never a read timeout)."""

    def answer(conn: socket.socket) -> None:
        conn.sendall(head)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            conn.sendall(b"x")
            time.sleep(0.2)

    return answer


def test_a_dripping_download_is_cut_at_the_time_limit(tmp_path: Path) -> None:
    port, close = serve_raw(drip(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n"))
    try:
        with sim_cloud(tmp_path, outbound_allow=["127.0.0.1"], image_download_max_seconds=2) as sim:
            started = time.monotonic()
            op = import_url(sim, f"http://127.0.0.1:{port}/disk.qcow2")
            took = time.monotonic() - started
    finally:
        close()
    assert op["error"]["code"] == "download_too_slow", op
    assert "2 seconds" in op["error"]["detail"]
    assert took < 30  # cut at ~2 s; the per-read timeout (30 s) never fires on a drip
    assert_nothing_stored(sim)


def test_dripped_headers_are_cut_at_the_time_limit_with_the_one_error(tmp_path: Path) -> None:
    port, close = serve_raw(drip(b"HTTP/1.1 200 OK\r\nX-Slow: "))
    try:
        started = time.monotonic()
        err = failing(
            f"http://127.0.0.1:{port}/x",
            tmp_path,
            Downloader(policy=OutboundPolicy.from_entries(["127.0.0.1"]), max_seconds=2),
        )
        took = time.monotonic() - started
    finally:
        close()
    assert (err.code, err.detail) == ("download_failed", UNREACHABLE)  # it never answered
    assert took < 30
