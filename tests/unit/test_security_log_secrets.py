"""Issue 13, finding 3: no secret in a URL or a log. Websockets authenticate by header, cookie or
subprotocol and refuse ``?token=``/``?ticket=`` with a close code and what to use instead; the
access log prints no query string; the first admin token goes to a 0600 file unless a person
watches the terminal. (The whole-log check of a real server is
tests/integration/test_security_log_secrets.py.)"""

from __future__ import annotations

import io
import logging
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.websockets import WebSocketDisconnect

from cloudlet import server
from cloudlet.api.app import ADMIN_TOKEN_FILE
from cloudlet.client import Client
from tests.unit.conftest import SimCloud

CreateVm = Callable[..., httpx.Response]


def closed(sim: SimCloud, path: str, **kw: object) -> tuple[int, str]:
    with pytest.raises(WebSocketDisconnect) as info, sim.client.websocket_connect(path, **kw) as ws:  # type: ignore[arg-type]
        ws.receive_text()
    return info.value.code, info.value.reason


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/events",
        "/api/v1/instances/web/console/serial",
        "/api/v1/instances/web/console/vnc",
        "/api/v1/instances/web/logs/ws",
        "/api/v1/instances/web/exec/ws",
        "/api/v1/instances/web/stats/ws",
        "/api/v1/host/terminal",
    ],
)
def test_a_token_in_the_url_is_refused_with_what_to_use(shared_sim: SimCloud, path: str) -> None:
    code, reason = closed(shared_sim, f"{path}?token={shared_sim.token}")
    assert code == 4400
    assert reason.startswith("token_in_url") and "Authorization" in reason and "bearer." in reason
    code, reason = closed(shared_sim, f"{path}?rows=3&ticket=cct_whatever")
    assert (code, reason.split(":")[0]) == (4400, "ticket_in_url")
    assert "subprotocol ticket.<ticket>" in reason


def test_a_valid_token_in_the_url_opens_nothing_even_with_a_header_too(shared_sim: SimCloud) -> None:
    path = f"/api/v1/events?workspace=default&token={shared_sim.token}"
    assert closed(shared_sim, path, headers=shared_sim.headers)[0] == 4400


def test_a_token_as_subprotocol_is_used_and_never_echoed(sim: SimCloud, create_vm: CreateVm) -> None:
    with sim.client.websocket_connect("/api/v1/events", subprotocols=[f"bearer.{sim.token}"]) as ws:
        assert ws.accepted_subprotocol is None
        create_vm("web")
        assert ws.receive_json()["type"]
    serial = "/api/v1/instances/web/console/serial"
    with sim.client.websocket_connect(serial, subprotocols=["binary", f"bearer.{sim.token}"]) as ws:
        assert ws.accepted_subprotocol == "binary"
        assert ws.receive_bytes().endswith(b"login: ")
    code, _ = closed(sim, serial, subprotocols=["binary", "bearer.clt_wrong"])
    assert code == 4401


def test_the_sdk_puts_no_secret_in_a_websocket_url() -> None:
    c = Client("http://127.0.0.1:1", "clt_secret")
    url, headers = c.ws_url("/instances/x/exec/ws", command=["sh"])
    assert "clt_secret" not in url and headers == {"Authorization": "Bearer clt_secret"}
    for secret in ("token", "ticket"):
        with pytest.raises(ValueError):
            c.ws_url("/events", **{secret: "x"})
    assert c.ticket_protocols("cct_1", "binary") == ["binary", "ticket.cct_1"]
    c.close()


# -- what reaches the log -----------------------------------------------------------------------


def uvicorn_lines(*records: tuple[str, str, tuple[object, ...]]) -> str:
    """Log ``records`` (logger, format, args) as uvicorn does, through the server's filter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    server.hide_query_strings()
    for name, fmt, args in records:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        try:
            record = logger.makeRecord(name, logging.INFO, __file__, 1, fmt, args, None)
            logger.handle(record)
        finally:
            logger.removeHandler(handler)
    return out.getvalue()


def test_the_access_log_prints_no_query_string() -> None:
    text = uvicorn_lines(
        (
            "uvicorn.access",
            '%s - "%s %s HTTP/%s" %d',
            ("1.2.3.4:5", "GET", "/api/v1/x?token=AAA&b=1", "1.1", 200),
        ),
        ("uvicorn.error", '%s - "WebSocket %s" [accepted]', ("1.2.3.4:5", "/api/v1/events?token=BBB")),
        (
            "uvicorn.error",
            '%s - "WebSocket %s" %d',
            ("1.2.3.4:5", "/api/v1/instances/a/console/vnc?ticket=CCC", 403),
        ),
        (
            "uvicorn.access",
            '%s - "%s %s HTTP/%s" %d',
            ("1.2.3.4:5", "GET", "/api/v1/oidc/callback?code=DDD", "1.1", 302),
        ),
    )
    for secret in ("AAA", "BBB", "CCC", "DDD", "?"):
        assert secret not in text
    assert '"GET /api/v1/x HTTP/1.1" 200' in text and '"WebSocket /api/v1/events" [accepted]' in text


def test_the_first_admin_token_goes_to_a_private_file_when_nobody_watches(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / ADMIN_TOKEN_FILE).write_text("an old one\n")
    (tmp_path / ADMIN_TOKEN_FILE).chmod(0o644)
    monkeypatch.setattr(server.sys.stdout, "isatty", lambda: False, raising=False)
    server.deliver_admin_token(tmp_path)("clt_first-admin")
    path = tmp_path / ADMIN_TOKEN_FILE
    assert path.read_text() == "clt_first-admin\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # made anew, not the old file's mode
    assert "clt_first-admin" not in capsys.readouterr().out + caplog.text
    assert str(path) in caplog.text


def test_the_first_admin_token_is_printed_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(server.sys.stdout, "isatty", lambda: True, raising=False)
    server.deliver_admin_token(tmp_path)("clt_first-admin")
    assert "clt_first-admin" in capsys.readouterr().out
    assert not (tmp_path / ADMIN_TOKEN_FILE).exists()
