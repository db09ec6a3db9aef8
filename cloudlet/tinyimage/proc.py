"""Running the host tools the image builder needs, with one error type for every failure."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from cloudlet.errors import DriverError

# Host tools, and the Debian package that provides each (named in the error when one is missing).
TOOL_PACKAGES = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg": "dpkg",
    "dpkg-query": "dpkg",
    "depmod": "kmod",
    "ldd": "libc-bin",
    "sfdisk": "fdisk",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "syslinux": "syslinux",
    "qemu-img": "qemu-utils",
    "zstd": "zstd",
}


class TinyImageError(DriverError):
    """Building the tiny image failed. ``cmd`` and ``stderr`` tell which host command and why."""

    code, title = "tiny_image_failed", "Tiny image build failed"

    def __init__(self, detail: str, *, cmd: Sequence[str] = (), stderr: str = "") -> None:
        super().__init__(detail)
        self.cmd = tuple(cmd)
        self.stderr = stderr


def run(
    cmd: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
) -> str:
    """Run ``cmd`` (an argument list, never a shell line) and return its stdout.

    Output is parsed in the C locale. Raises ``TinyImageError`` carrying the command's stderr when it
    cannot start, exits non-zero or times out.
    """
    argv = [str(c) for c in cmd]
    full_env = {**os.environ, "LC_ALL": "C", "MTOOLS_SKIP_CHECK": "1", **(env or {})}
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as err:
        package = TOOL_PACKAGES.get(argv[0], "?")
        raise TinyImageError(f"{argv[0]} is not installed (Debian package {package})", cmd=argv) from err
    except subprocess.TimeoutExpired as err:
        raise TinyImageError(f"{shlex.join(argv)} timed out after {timeout:.0f} s", cmd=argv) from err
    if proc.returncode != 0:
        stderr = proc.stderr.strip() or proc.stdout.strip()
        raise TinyImageError(
            f"{shlex.join(argv)} failed (exit {proc.returncode}): {stderr[-2000:]}", cmd=argv, stderr=stderr
        )
    return proc.stdout
