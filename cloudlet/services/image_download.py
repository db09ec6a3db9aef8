"""Downloading an image from an http(s) URL: streamed to a file (never whole in memory), hashed on
the way, with progress from Content-Length.

The server fetches what a user names, so the URL must not become a way into the server's own
network (SSRF). Every connection, redirects included, goes through ``_GuardedBackend``: it
resolves the host itself, refuses the request when ANY address of the name is refused by the
``OutboundPolicy`` (loopback, private, link-local... unless allow-listed), connects to the
checked address only (a name cannot resolve differently a second time) and checks the address
the socket really reached. Environment proxies are not used (they would do the resolving).

Whatever goes wrong on the way (a refused address, a name that does not resolve, a closed or
silent port, a reset, TLS, an error status, too many redirects, a cut body) the user sees one
error, ``download_failed`` with the same words: telling them apart would make the server a port
scanner of any network it may reach. The reason goes to the server log, for admins.

Each download has a total time limit besides the per-read timeout, so a source that drips bytes
cannot hold an operation worker forever.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpcore
import httpx

from cloudlet.config import Settings
from cloudlet.errors import InsufficientResources, Invalid
from cloudlet.services.outbound import AddressRefused, OutboundPolicy

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
MAX_URL = 2048
MAX_REDIRECTS = 5
CHUNK = 1024 * 1024
SHA256 = re.compile(r"^[0-9a-f]{64}$")
HOST = re.compile(r"^[A-Za-z0-9._:-]+$")  # a DNS name (IDNA-encoded), an IPv4 or an IPv6 address
LINK_LOCAL = ["169.254.0.0/16", "fe80::/10"]  # what image_url_block_link_local = false allowed
PROGRESS_INTERVAL = 0.5  # seconds between progress reports (each one is a database write)
UNREACHABLE = (
    "the image could not be downloaded: the address is not allowed, did not answer, or answered "
    "with an error (an admin finds the reason in the server log)"
)

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes when known)


@dataclass(frozen=True)
class Download:
    sha256: str
    size: int
    url: str  # where the bytes came from, after redirects


def check_url(url: str) -> str:
    """The URL if it is an absolute http(s) URL with a host; else ``Invalid`` (code ``invalid_url``)."""
    if len(url) > MAX_URL:
        raise Invalid(f"the URL is longer than {MAX_URL} characters", code="invalid_url")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as err:
        raise Invalid(f"not a valid URL: {err}", code="invalid_url") from None
    if parsed.scheme not in SCHEMES:
        raise Invalid(
            f"only http and https URLs are downloaded, not {parsed.scheme or 'a relative URL'!r}",
            code="invalid_url",
        )
    if not parsed.host:
        raise Invalid("the URL names no host", code="invalid_url")
    if not HOST.match(parsed.raw_host.decode("ascii", "replace")):
        raise Invalid(f"not a valid host name: {parsed.host!r}", code="invalid_url")
    return url


def check_sha256(value: str) -> str:
    """A sha256 hex digest, lower-cased; else ``Invalid`` (code ``invalid_sha256``)."""
    digest = value.strip().lower()
    if not SHA256.match(digest):
        raise Invalid("sha256 must be 64 hexadecimal digits", code="invalid_sha256")
    return digest


def shown_url(url: str | httpx.URL) -> str:
    """A URL as it may be logged: no user info and no query (signed URLs carry secrets there)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"
    port = f":{parsed.port}" if parsed.port else ""
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


class TimeLimitReached(Exception):
    """The download's total time is up (raised from inside a socket operation)."""


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def cap(self, timeout: float | None) -> float:
        """The timeout of the next socket operation: never past the deadline."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeLimitReached(f"more than {self.seconds:g} s")
        return left if timeout is None else min(timeout, left)


class _GuardedStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self.inner, self.deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, self.deadline.cap(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.deadline.cap(timeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self.inner.start_tls(ssl_context, server_hostname, self.deadline.cap(timeout))
        return _GuardedStream(tls, self.deadline)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Opens connections only to addresses the policy allows (see the module docstring)."""

    def __init__(self, policy: OutboundPolicy, deadline: _Deadline) -> None:
        self.policy, self.deadline = policy, deadline
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            raise httpcore.ConnectError(f"{host} does not resolve: {err}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:  # every address of the name, not only the one tried first
            self._check(host, address)
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                stream = self.inner.connect_tcp(
                    address, port, self.deadline.cap(timeout), local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                failure = err
                continue
            try:
                peer = stream.get_extra_info("server_addr")
                self._check(host, str(peer[0]) if peer else "")
            except BaseException:
                stream.close()
                raise
            return _GuardedStream(stream, self.deadline)
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("image downloads use TCP only")

    def _check(self, host: str, address: str) -> None:
        try:
            why = self.policy.refusal(host, address)
        except ValueError:
            why = "not an IP address"
        if why is not None:
            raise AddressRefused(host, address, why)


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, backend: _GuardedBackend) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, so its pool is replaced by one built on ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=2,
            network_backend=backend,
        )


class _Unreachable(Exception):
    """A failure the user sees only as ``UNREACHABLE``; the message is for the log."""


def too_big(size: int, max_bytes: int) -> InsufficientResources:
    """An image of ``size`` bytes (or more) does not fit in ``max_bytes``."""
    return InsufficientResources(
        f"the image ({size} bytes or more) does not fit: {max_bytes} bytes are free for images",
        code="insufficient_storage",
        free_bytes=max_bytes,
    )


@dataclass(frozen=True)
class Downloader:
    """How image URLs are fetched: the outbound policy, the timeout of each connect or read, and
    the time limit of a whole download."""

    policy: OutboundPolicy = field(default_factory=OutboundPolicy)
    timeout: float = 30.0
    max_seconds: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Downloader:
        allow = list(settings.outbound_allow)
        if not settings.image_url_block_link_local:  # the old switch, kept for existing configs
            log.warning("image_url_block_link_local is deprecated: use outbound_allow")
            allow += LINK_LOCAL
        return cls(
            policy=OutboundPolicy.from_entries(allow),
            timeout=settings.image_download_timeout,
            max_seconds=settings.image_download_max_seconds,
        )

    def fetch(
        self, url: str, dest: Path, *, progress: Progress | None = None, max_bytes: int | None = None
    ) -> Download:
        """Fetch ``url`` into ``dest``. Raises ``Invalid`` (``download_failed``, always the same
        detail, the reason logged) when it cannot be had; ``Invalid`` (``download_too_slow``) when
        a server that answered took longer than ``max_seconds`` in all; ``InsufficientResources``
        (``insufficient_storage``) when the file is larger than ``max_bytes`` (checked against
        Content-Length before anything is written, and while writing).
        ``dest`` may hold a partial file on error: the caller removes it."""
        deadline = _Deadline(self.max_seconds)
        try:
            return self._fetch(url, dest, deadline, progress, max_bytes)
        except _Answered as err:
            cause: Exception = err.cause
            answered = True
        except (TimeLimitReached, AddressRefused, _Unreachable, httpx.HTTPError) as err:
            cause, answered = err, False
        log.warning("image download from %s failed: %s", shown_url(url), _reason(cause, deadline))
        if answered and isinstance(cause, TimeLimitReached | httpx.TimeoutException) and deadline.passed():
            # Said plainly: the server was allowed, answered with success and was sending the
            # image, which a finished import would have shown anyway: nothing new is revealed.
            raise Invalid(
                f"the download took longer than {self.max_seconds:g} seconds "
                "(setting image_download_max_seconds)",
                code="download_too_slow",
            ) from None
        raise Invalid(UNREACHABLE, code="download_failed") from None

    def _fetch(
        self,
        url: str,
        dest: Path,
        deadline: _Deadline,
        progress: Progress | None,
        max_bytes: int | None,
    ) -> Download:
        def before_request(request: httpx.Request) -> None:
            if request.url.scheme not in SCHEMES:  # a redirect elsewhere
                raise _Unreachable(f"redirected to a {request.url.scheme!r} URL")

        transport = _GuardedTransport(_GuardedBackend(self.policy, deadline))
        with (
            httpx.Client(
                transport=transport,
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                timeout=self.timeout,
                event_hooks={"request": [before_request]},
                headers={"User-Agent": "cloudlet-image-import"},
            ) as http,
            http.stream("GET", url) as response,
        ):
            if response.status_code >= 400:
                raise _Unreachable(f"the server answered {response.status_code} {response.reason_phrase}")
            try:
                return _save(response, dest, progress, max_bytes)
            except (TimeLimitReached, httpx.HTTPError, _Unreachable) as err:
                raise _Answered(err) from None


class _Answered(Exception):
    """A failure after the server answered with a success status (wraps it)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _save(response: httpx.Response, dest: Path, progress: Progress | None, max_bytes: int | None) -> Download:
    digest, done = hashlib.sha256(), 0
    total = _content_length(response)
    if max_bytes is not None and total is not None and total > max_bytes:
        raise too_big(total, max_bytes)
    last_report = 0.0
    with dest.open("wb") as out:
        for chunk in response.iter_bytes(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if max_bytes is not None and done > max_bytes:
                raise too_big(done, max_bytes)
            out.write(chunk)
            now = time.monotonic()
            if progress is not None and now - last_report >= PROGRESS_INTERVAL:
                progress(done, total)
                last_report = now
    if total is not None and done != total:
        raise _Unreachable(f"the connection closed after {done} of {total} bytes")
    if progress is not None:
        progress(done, total)
    return Download(sha256=digest.hexdigest(), size=done, url=str(response.url))


def _reason(err: Exception, deadline: _Deadline) -> str:
    """What went wrong, for the log."""
    if isinstance(err, TimeLimitReached) or (isinstance(err, httpx.TimeoutException) and deadline.passed()):
        return f"took longer than {deadline.seconds:g} seconds in all"
    if isinstance(err, AddressRefused | _Unreachable):
        return str(err)
    if isinstance(err, httpx.TooManyRedirects):
        return f"more than {MAX_REDIRECTS} redirects"
    if isinstance(err, httpx.TimeoutException):
        return f"no answer in time ({type(err).__name__})"
    return f"{type(err).__name__}: {err}"


def _content_length(response: httpx.Response) -> int | None:
    """The body's size when the server says it and sends it unencoded (an encoded body's length
    says nothing about the bytes written)."""
    if response.headers.get("content-encoding", "identity") != "identity":
        return None
    try:
        length = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None
