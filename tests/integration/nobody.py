"""What another local user of the host can reach: probes run as ``nobody`` (uid 65534, group
nogroup, no supplementary groups) through ``setpriv``, with the system Python and only its
standard library, so the probe depends on nothing of cloudlet's virtualenv."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c"]

_PROBE = r"""
import json, os, socket, sys
out = {}
for kind, target in json.loads(sys.argv[1]):
    try:
        if kind == "list":
            os.listdir(target)
        elif kind == "read":
            with open(target, "rb") as fh:
                fh.read(1)
        elif kind == "open_rw":
            os.close(os.open(target, os.O_RDWR | os.O_NOCTTY))
        elif kind == "tcp":
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.settimeout(5)
                out[kind + " " + target] = "open: " + repr(s.recv(64))
                continue
        elif kind == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(target)
        out[kind + " " + target] = "open"
    except OSError as err:
        out[kind + " " + target] = "refused: " + type(err).__name__ + " " + str(err)
print(json.dumps(out))
"""


def probe(attempts: list[tuple[str, str]]) -> dict[str, str]:
    """Try each ``(kind, target)`` as nobody; kind is ``list`` (a folder), ``read`` (a file),
    ``open_rw`` (a device such as a pty), ``tcp`` (``host:port``) or ``unix`` (a socket path).
    Returns ``{"kind target": "open..." | "refused: ..."}``."""
    proc = subprocess.run(
        [*AS_NOBODY, _PROBE, json.dumps(attempts)], capture_output=True, text=True, timeout=60, check=True
    )
    result: dict[str, str] = json.loads(proc.stdout)
    return result


def opened(results: dict[str, str]) -> dict[str, str]:
    """The attempts that got through."""
    return {k: v for k, v in results.items() if not v.startswith("refused")}


def tree(root: Path) -> list[tuple[str, str]]:
    """Every folder (list) and regular file (read) under ``root``, ``root`` included."""
    attempts: list[tuple[str, str]] = [("list", str(root))]
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            continue
        if path.is_dir():
            attempts.append(("list", str(path)))
        elif path.is_file():
            attempts.append(("read", str(path)))
    return attempts
