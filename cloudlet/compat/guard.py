"""The door of a compatibility listener (OS Cloud, the reservation system): who may knock.

The APIs of the systems cloudlet replaces had no authentication and were reached on loopback by
local scripts. Loopback alone does not keep a browser out: a web page whose name is re-pointed at
127.0.0.1 (DNS rebinding) sends its requests there with its own name in the Host header. So a
listener wrapped in ``ListenerGuard``:

- answers only Host headers naming loopback (localhost, 127.0.0.1, [::1]), its listen address, or
  names the administrator allowed; anything else is refused with 403;
- with a token configured, wants ``Authorization: Bearer <token>`` (compared in constant time);
- is loopback-only by default: ``parse_listen`` reads a bare port as 127.0.0.1, and
  ``check_exposure`` refuses to start a listener on any other address without a token.

Nothing here knows which system the listener speaks for; refusals are rendered by a callable the
listener passes in (its own error shape), problem+json otherwise.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
DEFAULT_HOST = "127.0.0.1"

# How a listener words a refusal: (HTTP status, code, message) -> the response to send.
ErrorRenderer = Callable[[int, str, str], Response]


class UnsafeListener(ValueError):
    """A listen setting that would expose an unauthenticated API, or that cannot be read."""


@dataclass(frozen=True)
class Listen:
    host: str  # an address or a name, IPv6 without brackets
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str, *, setting: str) -> Listen:
    """``5000`` or ``:5000`` (loopback), ``HOST:5000`` or ``[IPv6]:5000``."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UnsafeListener(f"{setting}: write an IPv6 address in brackets, e.g. [::1]:5000 (got {value!r})")
    try:
        port = int(port_text)
    except ValueError:
        raise UnsafeListener(f"{setting}: {value!r} is not a port or host:port") from None
    if not 1 <= port <= 65535:
        raise UnsafeListener(f"{setting}: port {port} is out of range")
    return Listen(host or DEFAULT_HOST, port)


def check_exposure(listen: Listen, token: str | None, *, setting: str, token_setting: str) -> None:
    """Refuse a listener on an address other than loopback without a token: anyone who can reach
    that address would control what it serves."""
    if not listen.loopback and not token:
        raise UnsafeListener(
            f"{setting} = {str(listen)!r} is not a loopback address, and this API has no other "
            f"protection: set {token_setting} (clients then send 'Authorization: Bearer <token>'), "
            "or listen on 127.0.0.1"
        )


def host_name(header: str) -> str:
    """The name in a Host header, without its port, lower-cased: ``[::1]:5000`` -> ``::1``."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def problem(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"type": "about:blank", "title": message, "status": status, "detail": message, "code": code},
        status_code=status,
        media_type="application/problem+json",
    )


class ListenerGuard:
    """ASGI middleware: the Host header check and the optional bearer token (see module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        listen: Listen,
        allowed_hosts: Iterable[str] = (),
        token: str | None = None,
        error: ErrorRenderer = problem,
    ) -> None:
        self.app = app
        names = {host_name(h) for h in allowed_hosts} | LOOPBACK_NAMES
        if listen.host not in WILDCARDS:
            names.add(listen.host.lower())
        self.allowed = frozenset(names)
        self.token = token.encode() if token else None
        self.error = error

    def refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        headers = Headers(scope=scope)
        host = host_name(headers.get("host", ""))
        if host not in self.allowed:
            return 403, "host_not_allowed", f"this API does not answer for the host name {host[:64]!r}"
        if self.token is not None:
            auth = headers.get("authorization", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
                return (
                    401,
                    "unauthorized",
                    "an 'Authorization: Bearer <token>' header with this API's token is needed",
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":  # closing before accepting answers the handshake with 403
            await send({"type": "websocket.close", "code": 1008, "reason": refused[1]})
        else:
            response = self.error(*refused)
            if refused[0] == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
