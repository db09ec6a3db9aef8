"""`cloudlet vm console`: this terminal bridged to a VM's serial console, as `virsh console` does.
Keys go to the guest as they are pressed (raw mode); Ctrl-] leaves."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from urllib.parse import quote

from cloudlet.client import Client

ESCAPE = b"\x1d"  # Ctrl-]


def split_escape(data: bytes) -> tuple[bytes, bool]:
    """The bytes typed before the escape character, and whether it was typed."""
    at = data.find(ESCAPE)
    return (data, False) if at < 0 else (data[:at], True)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode while inside (when ``fd`` is a terminal), restored however it ends."""
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def serial_console(c: Client, ref: str, announce: bool = True) -> bool:
    """Bridge stdin/stdout and the VM's serial console until Ctrl-] (True) or until the server
    closes it, as when the VM stops (False). A one-time ticket opens it, so problems (a stopped
    VM, a container, no permission) come back as API errors before anything connects."""
    from websockets.exceptions import ConnectionClosedError
    from websockets.sync.client import connect
    from websockets.typing import Subprotocol

    ticket = c.console_ticket(ref, "serial")
    url, headers = c.ws_url(f"/instances/{quote(ref, safe='')}/console/serial")
    protocols = [Subprotocol(p) for p in c.ticket_protocols(ticket["ticket"], "binary")]
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    escaped = threading.Event()
    with connect(url, additional_headers=headers, subprotocols=protocols, max_size=None) as ws:
        if announce:
            sys.stderr.write(f"Connected to {ref} (escape character is ^])\r\n")
            sys.stderr.flush()

        def pump_stdin() -> None:
            with contextlib.suppress(OSError, ConnectionClosedError):
                while data := os.read(stdin, 4096):
                    data, leave = split_escape(data)
                    if data:
                        ws.send(data)
                    if leave:
                        escaped.set()
                        break
            ws.close()  # Ctrl-] or the end of stdin

        with raw_terminal(stdin):
            threading.Thread(target=pump_stdin, name="console-stdin", daemon=True).start()
            with contextlib.suppress(ConnectionClosedError):
                for frame in ws:
                    os.write(stdout, frame if isinstance(frame, bytes) else frame.encode())
    sys.stderr.write("\r\n")
    return escaped.is_set()
