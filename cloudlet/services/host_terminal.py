"""A shell on the server host, for system admins, when the ``host_terminal`` setting is on.

The shell runs under a pseudo-terminal as the server's own user. Every session is audited: its
start and end go to the audit log, and everything the terminal showed is kept as a transcript in
``<data_dir>/terminal-sessions/`` (mode 0600).
"""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import termios
from pathlib import Path
from typing import IO

from cloudlet.drivers.containers import ExecSession


def login_shell() -> list[str]:
    shell = os.environ.get("SHELL") or shutil.which("bash") or "/bin/sh"
    return [shell, "-l"]


class HostTerminal(ExecSession):
    def __init__(self, command: list[str], transcript: Path, rows: int = 24, cols: int = 80) -> None:
        transcript.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(transcript, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._transcript: IO[bytes] = os.fdopen(fd, "ab", buffering=0)
        self._master, slave = pty.openpty()
        self._resize(slave, rows, cols)
        env = {**os.environ, "TERM": "xterm-256color"}
        self._proc = subprocess.Popen(
            command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=Path.home(),
            start_new_session=True,  # its own session: the pty becomes its controlling terminal
            close_fds=True,
        )
        os.close(slave)
        self._closed = False

    @staticmethod
    def _resize(fd: int, rows: int, cols: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read(self, size: int = 65536) -> bytes:
        try:
            data = os.read(self._master, size)
        except OSError:  # EIO: the shell ended and the pty closed
            return b""
        self._transcript.write(data)
        return data

    def write(self, data: bytes) -> None:
        os.write(self._master, data)

    def resize(self, rows: int, cols: int) -> None:
        self._resize(self._master, rows, cols)

    def exit_code(self) -> int | None:
        return self._proc.poll()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGHUP)
                self._proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self._proc.kill()
        os.close(self._master)
        self._transcript.close()
