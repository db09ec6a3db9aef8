"""Downloading an image from an http(s) URL: streamed to a file (never whole in memory), hashed on
the way, with progress from Content-Length.

Only http and https are fetched. By default no request goes to a link-local address (169.254.0.0/16,
fe80::/10), where cloud metadata services answer: the host name of every request, redirects
included, is resolved and checked before it is sent, and the address the connection really reached
is checked again (a name that resolves differently the second time gains nothing).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cloudlet.errors import Forbidden, InsufficientResources, Invalid

SCHEMES = ("http", "https")
MAX_URL = 2048
MAX_REDIRECTS = 5
CHUNK = 1024 * 1024
SHA256 = re.compile(r"^[0-9a-f]{64}$")
HOST = re.compile(r"^[A-Za-z0-9._:-]+$")  # a DNS name (IDNA-encoded), an IPv4 or an IPv6 address
PROGRESS_INTERVAL = 0.5  # seconds between progress reports (each one is a database write)

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


def _forbidden_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone ("%eth0") is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local


def _refuse(host: str, address: str) -> Forbidden:
    return Forbidden(
        f"{host} is a link-local address ({address}), where metadata services answer; "
        "image downloads from there are off (setting image_url_block_link_local)",
        code="url_forbidden",
    )


def check_host(host: str) -> None:
    """Refuse a host name that is, or resolves to, a link-local address. A name that does not
    resolve passes: the download then fails to connect, with that error."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return
    for info in infos:
        address = str(info[4][0])
        if _forbidden_address(address):
            raise _refuse(host, address)


def _peer_address(response: httpx.Response) -> str | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    peer: Any = stream.get_extra_info("server_addr")
    return str(peer[0]) if peer else None


def _too_big(size: int, max_bytes: int) -> InsufficientResources:
    return InsufficientResources(
        f"the image ({size} bytes or more) does not fit: {max_bytes} bytes are free for images",
        code="insufficient_storage",
        free_bytes=max_bytes,
    )


def _failed(url: str, why: str) -> Invalid:
    return Invalid(f"downloading {url} failed: {why}", code="download_failed")


def download(
    url: str,
    dest: Path,
    *,
    progress: Progress | None = None,
    timeout: float = 30.0,
    block_link_local: bool = True,
    max_bytes: int | None = None,
) -> Download:
    """Fetch ``url`` into ``dest``. Raises ``Invalid`` (``download_failed``) when the server cannot be
    reached or answers with an error status, ``Forbidden`` (``url_forbidden``) for a link-local host,
    ``InsufficientResources`` (``insufficient_storage``) when the file is larger than ``max_bytes``
    (checked against Content-Length before anything is written, and while writing).
    ``dest`` may hold a partial file on error: the caller removes it."""

    def before_request(request: httpx.Request) -> None:
        if request.url.scheme not in SCHEMES:  # a redirect elsewhere
            raise _failed(url, f"redirected to a {request.url.scheme!r} URL")
        if block_link_local:
            check_host(request.url.host)

    digest, done = hashlib.sha256(), 0
    try:
        with (
            httpx.Client(
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                timeout=timeout,
                event_hooks={"request": [before_request]},
                headers={"User-Agent": "cloudlet-image-import"},
            ) as http,
            http.stream("GET", url) as response,
        ):
            peer = _peer_address(response)
            if block_link_local and peer is not None and _forbidden_address(peer):
                raise _refuse(response.url.host, peer)
            if response.status_code >= 400:
                raise _failed(url, f"the server answered {response.status_code} {response.reason_phrase}")
            total = _content_length(response)
            if max_bytes is not None and total is not None and total > max_bytes:
                raise _too_big(total, max_bytes)
            last_report = 0.0
            with dest.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    digest.update(chunk)
                    done += len(chunk)
                    if max_bytes is not None and done > max_bytes:
                        raise _too_big(done, max_bytes)
                    out.write(chunk)
                    now = time.monotonic()
                    if progress is not None and now - last_report >= PROGRESS_INTERVAL:
                        progress(done, total)
                        last_report = now
            if total is not None and done != total:
                raise _failed(url, f"the connection closed after {done} of {total} bytes")
            final_url = str(response.url)
    except httpx.TooManyRedirects:
        raise _failed(url, f"more than {MAX_REDIRECTS} redirects") from None
    except httpx.TimeoutException:
        raise _failed(url, f"no answer within {timeout:g} seconds") from None
    except httpx.HTTPError as err:
        raise _failed(url, str(err) or type(err).__name__) from None
    if progress is not None:
        progress(done, total)
    return Download(sha256=digest.hexdigest(), size=done, url=final_url)


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
