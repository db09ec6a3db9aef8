"""Issue 13, finding 3, on a real server process whose stdout and stderr go to one log file: a whole
session of several people (password sign-ins, refreshes, browser sessions with cookies, API
tokens, the events websocket by header, subprotocol and cookie, VNC and serial console tickets on a
real VM, refused attempts with ``?token=`` and ``?ticket=`` and a query secret on a plain route),
then the WHOLE log is read: no secret issued or used during the run appears in it, the first
admin token included."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from cloudlet.api.app import ADMIN_TOKEN_FILE
from tests.integration.conftest import Server, import_tiny, running_server, traversable_tmp

pytestmark = pytest.mark.integration
VM = "logvm"


@pytest.fixture(scope="module")
def server(libvirt_conn) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    with running_server(libvirt_conn, traversable_tmp("server-logs-")) as s:
        yield s


class Secrets:
    """Every secret the session is handed or makes up, with what it was."""

    def __init__(self) -> None:
        self.found: dict[str, str] = {}

    def add(self, what: str, value: str) -> str:
        assert value, what
        self.found[value] = what
        return value


def ws(server: Server, path: str, **kw) -> ClientConnection:  # type: ignore[no-untyped-def]
    return connect(server.url.replace("http", "ws", 1) + "/api/v1" + path, open_timeout=30, **kw)


def refused_in_url(server: Server, path: str) -> tuple[int, str]:
    """Open a websocket whose URL carries a secret: the server closes it with a code and a reason."""
    with ws(server, path) as sock, pytest.raises(ConnectionClosed) as closed:
        sock.recv(timeout=10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_no_secret_of_a_whole_session_reaches_the_log(server: Server, tiny_image: Path) -> None:
    found = Secrets()
    admin = found.add("the first admin token", server.token)
    token_file = server.data_dir / ADMIN_TOKEN_FILE
    assert token_file.stat().st_mode & 0o777 == 0o600
    api = httpx.Client(base_url=server.url + "/api/v1", timeout=60)
    as_admin = {"Authorization": f"Bearer {admin}"}

    # people with passwords, who sign in, refresh, and sign out
    people: dict[str, str] = {}
    for n in range(3):
        name, password = f"person{n}", found.add(f"password {n}", f"pw-{secrets.token_urlsafe(12)}")
        assert api.post("/users", json={"username": name, "password": password}, headers=as_admin).is_success
        member = {"username": name, "role": "operator"}
        assert api.post("/workspaces/default/members", json=member, headers=as_admin).is_success
        people[name] = password
    assert (
        api.post(
            "/auth/login", json={"username": "person0", "password": "wrong-" + people["person0"]}
        ).status_code
        == 401
    )
    pairs: dict[str, dict[str, str]] = {}
    for name, password in people.items():
        pair = api.post("/auth/login", json={"username": name, "password": password}).json()
        found.add(f"{name}'s access JWT", pair["access_token"])
        found.add(f"{name}'s refresh token", pair["refresh_token"])
        renewed = api.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
        found.add(f"{name}'s renewed access JWT", renewed["access_token"])
        pairs[name] = {
            "access": renewed["access_token"],
            "refresh": found.add("renewed refresh", renewed["refresh_token"]),
        }
        me = api.get("/auth/me", headers={"Authorization": f"Bearer {renewed['access_token']}"})
        assert me.json()["username"] == name
    assert api.post("/auth/logout", json={"refresh_token": pairs["person2"]["refresh"]}).status_code == 204

    # API tokens made by a person, used on HTTP and websockets
    made = api.post(
        "/tokens",
        json={"name": "ci", "role": "operator"},
        headers={"Authorization": f"Bearer {pairs['person1']['access']}"},
    ).json()
    ci = found.add("person1's API token", made["token"])
    assert api.get("/instances", headers={"Authorization": f"Bearer {ci}"}).is_success

    # a browser session: cookies, CSRF, a renewal, the events websocket by cookie
    browser = httpx.Client(base_url=server.url + "/api/v1", timeout=60)
    session = browser.post(
        "/auth/session", json={"username": "person0", "password": people["person0"]}
    ).json()
    csrf = found.add("the CSRF token", session["csrf_token"])
    for cookie in browser.cookies.jar:
        found.add(f"cookie {cookie.name}", cookie.value or "")
    renewed_session = browser.post("/auth/session/refresh", headers={"X-CSRF-Token": csrf})
    assert renewed_session.is_success, renewed_session.text
    csrf = found.add("the renewed CSRF token", renewed_session.json()["csrf_token"])
    for cookie in browser.cookies.jar:
        found.add(f"renewed cookie {cookie.name}", cookie.value or "")
    cookie_header = "; ".join(f"{c.name}={c.value}" for c in browser.cookies.jar if c.path == "/")
    made_project = browser.post("/projects", json={"name": "logs"}, headers={"X-CSRF-Token": csrf})
    assert made_project.status_code == 201, made_project.text
    with ws(server, "/events", additional_headers={"Cookie": cookie_header, "Origin": server.url}) as events:
        events.ping().wait(10)  # accepted: a cookie session from the server's own origin

    # the events websocket by header and by subprotocol (never echoed back)
    with ws(server, "/events", additional_headers=as_admin) as events:
        assert events.subprotocol is None
    with ws(server, "/events", subprotocols=[f"bearer.{ci}"]) as events:  # type: ignore[list-item]
        assert events.subprotocol is None

    # a real VM's consoles with one-time tickets
    with server.client() as c:
        import_tiny(c, tiny_image)
        c.create_instance(name=VM, image="tiny", memory=128)
        vnc = found.add("a VNC ticket", c.console_ticket(VM, "vnc")["ticket"])
        serial = found.add("a serial ticket", c.console_ticket(VM, "serial")["ticket"])
        unused = found.add("an unused ticket", c.console_ticket(VM, "vnc")["ticket"])
    with ws(
        server, f"/instances/{VM}/console/vnc", subprotocols=["binary", f"ticket.{vnc}"], max_size=None
    ) as screen:  # type: ignore[list-item]
        assert screen.subprotocol == "binary"
        assert screen.recv(timeout=30)[:4] == b"RFB "
    with ws(server, f"/instances/{VM}/console/serial", subprotocols=["binary", f"ticket.{serial}"]) as line:  # type: ignore[list-item]
        assert line.subprotocol == "binary"

    # secrets in URLs: refused, with what to use instead
    code, reason = refused_in_url(server, f"/events?token={ci}")
    assert code == 4400 and "Authorization" in reason
    code, reason = refused_in_url(server, f"/instances/{VM}/console/vnc?ticket={unused}")
    assert code == 4400 and "ticket.<ticket>" in reason
    leaked = found.add("a token put in a plain route's query", f"clt_{secrets.token_urlsafe(24)}")
    assert api.get("/instances", params={"token": leaked}).status_code == 401

    with server.client() as c:
        c.delete_instance(VM, force=True)
    api.close()
    browser.close()

    log = server.log.read_text()
    # the log is the one every line went to: the session's requests are there, only their secrets not
    assert '"POST /api/v1/auth/login HTTP/1.1" 200' in log
    assert "WebSocket /api/v1/events" in log and f"/api/v1/instances/{VM}/console/vnc" in log
    assert '"GET /api/v1/instances HTTP/1.1" 401' in log
    assert str(token_file) in log  # where the admin token is, not the token
    assert len(found.found) >= 25
    seen = {what: secret for secret, what in found.found.items() if secret in log}
    tails = {
        what: secret for secret, what in found.found.items() if len(secret) >= 24 and secret[-16:] in log
    }
    assert not seen and not tails, f"secrets in the server log: {sorted(seen | tails)}"
