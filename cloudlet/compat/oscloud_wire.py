"""What OS Cloud's requests and answers look like on the wire, apart from what they do.

OS Cloud (the teaching cloud of the University POLITEHNICA of Bucharest operating-systems course,
a Flask app) answered every refusal of its API with HTTP 200 and ``{"status": "error",
"error_msg": "..."}``, its successes with ``{"status": "ok", ...}``, in Flask's JSON: keys sorted,
no spaces, non-ASCII escaped, a newline at the end. It read JSON bodies only
(``Content-Type: application/json``), and sizes with ``humanfriendly.parse_size(..., binary=True)``
("2G", "512M", "1.5G", "2GiB", "10 GB": binary units either way). Its scripts read ``error_msg``.
"""

from __future__ import annotations

import email.message
import json
from typing import Any

import humanfriendly
from starlette.requests import Request
from starlette.responses import JSONResponse


class FlaskJSON(JSONResponse):
    """JSON as Flask's ``jsonify`` wrote it, byte for byte: ``{"id":1,"status":"ok"}`` + newline."""

    def render(self, content: Any) -> bytes:
        return (json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


class Refusal(Exception):
    """A refusal in OS Cloud's words: ``message`` becomes ``error_msg``. ``status`` stays 200 as
    OS Cloud's own refusals did; the few answers Flask itself gave with another status (an unknown
    route, a body that is not JSON) keep theirs."""

    def __init__(self, message: str, *, code: str = "invalid", status: int = 200) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def refusal(message: str, code: str, status: int = 200) -> FlaskJSON:
    """The error envelope: ``error_msg`` for OS Cloud's clients, ``error`` and ``code`` besides."""
    body = {"status": "error", "error_msg": message, "error": message, "code": code}
    return FlaskJSON(body, status_code=status)


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body. Only ``application/json`` (or ``+json``) bodies are read, as
    OS Cloud did: a browser cannot send those to another site without asking first (CORS), so a
    web page cannot drive this API from a visitor's machine."""
    message = email.message.Message()
    message["content-type"] = request.headers.get("content-type", "")
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (
        subtype == "json" or subtype.endswith("+json")
    ):
        raise Refusal(
            "send a JSON body with 'Content-Type: application/json'",
            code="unsupported_media_type",
            status=415,
        )
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as err:
        raise Refusal(f"the body is not valid JSON: {err}", code="invalid_json", status=400) from None
    if not isinstance(body, dict):
        raise Refusal("the body must be a JSON object", code="invalid_json", status=400)
    return body


def required(body: dict[str, Any], field: str) -> Any:
    """``body[field]``, refused with OS Cloud's own message when missing or empty (OS Cloud tested
    ``not value``: null, "", 0, false, [] and {} are all "not provided")."""
    value = body.get(field)
    if not value:
        raise Refusal(f"VM {field} not provided", code="missing_field")
    return value


def parse_size(value: Any, field: str) -> int:
    """Bytes from ``value`` as OS Cloud read it (a whole number is a byte count too); its message
    otherwise: ``Invalid mem_size: lots``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        try:
            return int(humanfriendly.parse_size(value, binary=True))
        except humanfriendly.InvalidSize:
            pass
    raise Refusal(f"Invalid {field}: {value}", code="invalid_size")


def text_field(value: Any) -> str:
    """A name, image or network as text: OS Cloud stored numbers as their digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    raise Refusal(f"expected text, not {json.dumps(value)[:60]}", code="invalid")


def ssh_keys(value: Any) -> tuple[str, ...]:
    """``ssh_key`` as the native API's ``ssh_keys``: one key, several lines of keys, or a list."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(line.strip() for line in value.splitlines() if line.strip())
    if isinstance(value, list) and all(isinstance(k, str) for k in value):
        return tuple(value)
    raise Refusal("ssh_key must be an OpenSSH public key line (or a list of them)", code="invalid_ssh_key")


def vm_number(body: dict[str, Any]) -> tuple[int | None, str]:
    """The VM id of an ``{"id": N}`` body and the id as the client wrote it (for messages): None
    for an id no VM can have ("abc", 1.5), which OS Cloud answered as not found."""
    given = required(body, "id")
    shown = given if isinstance(given, str) else json.dumps(given)
    if isinstance(given, int) and not isinstance(given, bool):
        return given, shown
    if isinstance(given, str) and given.strip().isdigit() and given.strip().isascii():
        return int(given.strip()), shown
    return None, shown
