"""The consoles of one real VM (the tiny guest, which runs a getty on its serial port and on tty1).

Serial: the websocket shows the guest's login prompt and echoes what is typed; the CLI bridges a
terminal to it and leaves on Ctrl-]. VNC: a ticket opens an RFB session that completes the
handshake up to ServerInit; the same ticket is refused the second time. Typed text: it lands at
tty1's login prompt, read back over SSH from the guest's /dev/vcs1 (the text on its screen).
Screenshot: a PNG of the screen. When the VM stops, an open console closes and new ones get 409.
Two replicas on one PostgreSQL database honour each other's tickets, and each ticket works once."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from cloudlet.client import ApiError, Client
from tests.helpers import eventually
from tests.integration.conftest import (
    CLOUDLET,
    Server,
    import_tiny,
    running_server,
    ssh_run,
    traversable_tmp,
    wait_guest_ssh,
)
from tests.integration.test_events_and_cli import _cli

pytestmark = pytest.mark.integration
VM = "con1"


@pytest.fixture(scope="module")
def vm(sqlite_server, tiny_image, ssh_key) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    _, pub = ssh_key
    with sqlite_server.client() as c:
        import_tiny(c, tiny_image)
        c.create_instance(name=VM, image="tiny", memory=128, ssh_keys=[pub])
        yield c.instance(VM)


def serial(c: Client) -> ClientConnection:
    url, headers = c.ws_url(f"/instances/{VM}/console/serial")
    return connect(url, additional_headers=headers, max_size=None, open_timeout=30)


def read_until(ws: ClientConnection, marker: bytes, timeout: float = 60, poke: bytes | None = None) -> bytes:
    """Guest output until ``marker`` shows; ``poke`` is sent every few seconds meanwhile."""
    seen = b""
    deadline = time.monotonic() + timeout
    next_poke = 0.0
    while marker not in seen:
        now = time.monotonic()
        assert now < deadline, f"no {marker!r} in {seen[-500:]!r}"
        if poke is not None and now >= next_poke:
            ws.send(poke)
            next_poke = now + 3
        try:
            frame = ws.recv(timeout=0.5)
        except TimeoutError:
            continue
        assert isinstance(frame, bytes)
        seen += frame
    return seen


def quiet(ws: ClientConnection, seconds: float = 1.0) -> None:
    """Read until the guest has printed nothing for ``seconds``."""
    with contextlib.suppress(TimeoutError):
        while True:
            ws.recv(timeout=seconds)


def test_serial_console_shows_the_login_prompt_and_echoes(sqlite_server, vm) -> None:  # type: ignore[no-untyped-def]
    with sqlite_server.client() as c, serial(c) as ws:
        started = time.monotonic()
        read_until(ws, f"{VM} login: ".encode(), timeout=90, poke=b"\r")
        print(f"login prompt on the serial console after {time.monotonic() - started:.1f}s")
        # Boot messages (DHCP, the kernel) go to this console too: once they are over, a fresh prompt
        read_until(ws, b"cloudlet-tiny ready", timeout=60)
        quiet(ws)
        out = read_until(ws, f"{VM} login: ".encode(), timeout=10, poke=b"\r")
        assert b"cloudlet tiny image" in out  # getty printed the guest's /etc/issue
        quiet(ws)
        word = f"hello-{secrets.token_hex(3)}".encode()
        ws.send(word)
        assert word in read_until(ws, word, timeout=10)


def test_cli_console_attaches_and_leaves_on_ctrl_bracket(sqlite_server, vm) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "CLOUDLET_URL": sqlite_server.url, "CLOUDLET_TOKEN": sqlite_server.token}
    output = bytearray()
    with subprocess.Popen(
        [CLOUDLET, "vm", "console", VM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    ) as proc:
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None

        def read() -> None:
            while chunk := stdout.read1(4096):
                output.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        try:

            def prompted() -> bool:
                stdin.write(b"\r")
                stdin.flush()
                return b"login: " in output

            eventually(prompted, timeout=30, interval=1, what="the login prompt through the CLI")
            stdin.write(b"\x1d")  # Ctrl-]
            stdin.flush()
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(timeout=5)


class Rfb:
    """Just enough of an RFB client to check the handshake through the websocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.buffer = b""

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            frame = self.ws.recv(timeout=20)
            assert isinstance(frame, bytes), "RFB comes in binary frames"
            self.buffer += frame
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


def test_vnc_ticket_opens_an_rfb_session_once(sqlite_server, vm) -> None:  # type: ignore[no-untyped-def]
    with sqlite_server.client() as c:
        ticket = c.console_ticket(VM)
        url, _ = c.ws_url(f"/instances/{VM}/console/vnc")
        protocols = c.ticket_protocols(ticket["ticket"], "binary")
    with connect(url, subprotocols=protocols, max_size=None) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "binary"
        rfb = Rfb(ws)
        version = rfb.read(12)
        assert version.startswith(b"RFB 003.00") and version.endswith(b"\n"), version
        ws.send(version)
        count = rfb.read(1)[0]
        types = list(rfb.read(count))
        assert 1 in types, f"security type None is offered: {types}"  # the ticket was the password
        ws.send(bytes([1]))
        assert struct.unpack(">I", rfb.read(4))[0] == 0  # SecurityResult: OK
        ws.send(bytes([1]))  # ClientInit: shared
        width, height = struct.unpack(">HH", rfb.read(4))
        rfb.read(16)  # pixel format
        name = rfb.read(struct.unpack(">I", rfb.read(4))[0])
        assert width > 0 and height > 0, (width, height)
        print(f"VNC ServerInit: {width}x{height} {name!r}")
    # the second use: the server refuses before accepting
    with pytest.raises(InvalidStatus) as refused, connect(url, subprotocols=protocols):  # type: ignore[arg-type]
        pass
    assert refused.value.response.status_code == 403


def test_typed_text_reaches_the_guest_screen(sqlite_server, vm, ssh_key) -> None:  # type: ignore[no-untyped-def]
    key, _ = ssh_key
    wait_guest_ssh(key, vm["ip"])
    marker = f"Typed-{secrets.token_hex(3)} ~!@#$%^&*()_+{{}}|:<>?"
    shown = [""]

    def screen() -> str:
        out = ssh_run(key, vm["ip"], "cat /dev/vcs1")
        assert out.returncode == 0, out.stderr
        shown[0] = out.stdout
        return out.stdout

    def wait_screen(wanted: Callable[[str], bool], what: str) -> None:
        try:
            eventually(lambda: wanted(screen()), timeout=20, what=what)
        except AssertionError as err:
            raise AssertionError(f"{err}; tty1 shows {shown[0]!r}") from None

    # Enter at the empty prompt: getty asks again, so the screen ends with a fresh prompt
    with sqlite_server.client() as c:
        assert c.type_text(VM, "\n") == {"keys": 1}
    wait_screen(lambda text: text.rstrip().endswith(f"{VM} login:"), "a fresh login prompt on tty1")
    with sqlite_server.client() as c:
        started = time.monotonic()
        assert c.type_text(VM, marker) == {"keys": len(marker)}
        print(f"typed {len(marker)} keys in {time.monotonic() - started:.2f}s")
    # getty on tty1 echoes the login name as it is typed
    wait_screen(lambda text: text.rstrip().endswith(f"{VM} login: {marker}"), "the typed text on tty1")
    out = _cli(sqlite_server, "vm", "type", VM, "+by-cli", "--enter")
    assert out.returncode == 0 and "typed 8 keys" in out.stdout, out.stderr
    # the name goes on, and after Enter login asks for a password
    wait_screen(lambda text: "Password:" in text.split(marker + "+by-cli")[-1], "the password prompt")
    bad = _cli(sqlite_server, "vm", "type", VM, "café")
    assert bad.returncode == 2 and "untypable_text" in bad.stderr


def test_screenshot_is_a_png_of_the_screen(sqlite_server, vm, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with sqlite_server.client() as c:
        started = time.monotonic()
        png = c.screenshot(VM)
        print(f"screenshot {len(png)} bytes in {time.monotonic() - started:.2f}s")
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        assert image.width >= 640 and image.height >= 400, image.size  # VGA text mode is 720x400
        assert len(image.convert("L").getcolors(maxcolors=256) or []) > 1  # text, not a blank screen
    path = tmp_path / "screen.png"
    out = _cli(sqlite_server, "vm", "screenshot", VM, "-o", str(path))
    assert out.returncode == 0, out.stderr
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_stopping_vm_closes_its_console_and_refuses_new_ones(sqlite_server, vm) -> None:  # type: ignore[no-untyped-def]
    with sqlite_server.client() as c:
        with serial(c) as ws:
            c.action(VM, "force-stop")
            started = time.monotonic()
            with pytest.raises(ConnectionClosedOK):
                while True:
                    ws.recv(timeout=20)
            print(f"console closed {time.monotonic() - started:.2f}s after the VM stopped")
            assert ws.close_code == 1000
        with pytest.raises(ApiError) as stopped:
            c.screenshot(VM)
        assert (stopped.value.status, stopped.value.code) == (409, "instance_not_running")
        with pytest.raises(ApiError) as stopped:
            c.console_ticket(VM, "serial")
        assert stopped.value.code == "instance_not_running"
    out = _cli(sqlite_server, "vm", "console", VM)
    assert out.returncode == 2 and "instance_not_running" in out.stderr


def test_tickets_work_once_across_replicas_sharing_postgresql(libvirt_conn, tiny_image) -> None:  # type: ignore[no-untyped-def]
    """Two servers on one PostgreSQL database: a ticket issued by one opens the VNC console on the
    other, and when both are handed the same ticket at once, exactly one accepts it."""
    with running_server(libvirt_conn, traversable_tmp("server-console-a-"), "postgresql") as a:
        replica = Server(
            data_dir=traversable_tmp("server-console-b-"),
            database_url=a.database_url,
            cidr=a.cidr,
            token=a.token,
            extra_env={"CLOUDLET_JWT_KEY_FILE": str(a.data_dir / "jwt.key")},  # replicas share one key
        )
        replica.start()
        try:
            with a.client() as ca:
                import_tiny(ca, tiny_image)
                ca.create_instance(name="rep1", image="tiny", memory=128)
                first = ca.console_ticket("rep1")
                races = [ca.console_ticket("rep1") for _ in range(3)]
            with replica.client() as cb:
                url, _ = cb.ws_url("/instances/rep1/console/vnc")
            with connect(url, subprotocols=[f"ticket.{first['ticket']}"], max_size=None) as ws:  # type: ignore[list-item]
                assert Rfb(ws).read(12).startswith(b"RFB 003.00")

            def attempt(server: Server, secret: str) -> bool:
                with server.client() as c:
                    url, _ = c.ws_url("/instances/rep1/console/vnc")
                try:
                    with connect(url, subprotocols=[f"ticket.{secret}"], max_size=None) as ws:  # type: ignore[list-item]
                        return Rfb(ws).read(12).startswith(b"RFB ")
                except InvalidStatus as err:
                    assert err.response.status_code == 403
                    return False

            for ticket in races:
                with ThreadPoolExecutor(4) as pool:
                    wins = list(pool.map(attempt, [a, replica] * 2, [ticket["ticket"]] * 4))
                assert wins.count(True) == 1, wins
        finally:
            replica.stop()
            shutil.rmtree(replica.data_dir, ignore_errors=True)
