"""A ``newc`` cpio writer for the initramfs, in Python so no root is needed for owners or devices.

Every entry is owned by root with a fixed mtime, and entries are sorted, so the same tree always
gives the same archive.
"""

from __future__ import annotations

import gzip
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class DeviceNode:
    """A device file to put in the archive (``mknod`` needs root; an archive entry does not)."""

    path: str
    mode: int  # including stat.S_IFCHR or stat.S_IFBLK
    major: int
    minor: int


class Sink(Protocol):
    """Where an archive goes: a file or a compressor."""

    def write(self, data: bytes, /) -> int: ...


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _entry(
    out: Sink, ino: int, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
) -> None:
    raw = name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(mode) else 1
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out.write(header + raw + _pad4(len(header) + len(raw)))
    out.write(data + _pad4(len(data)))


def write_newc(root: Path, out: Sink, devices: tuple[DeviceNode, ...] = ()) -> None:
    """Archive the tree under ``root`` (directories, regular files, symlinks) plus ``devices``."""
    paths = sorted(p for p in root.rglob("*"))
    ino = 1
    for path in paths:
        st = path.lstat()
        name = path.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            data = os.readlink(path).encode()
        elif stat.S_ISREG(st.st_mode):
            data = path.read_bytes()
        elif stat.S_ISDIR(st.st_mode):
            data = b""
        else:
            raise ValueError(f"cannot archive {path}: not a file, folder or symlink")
        _entry(out, ino, name, st.st_mode, data)
        ino += 1
    for dev in devices:
        _entry(out, ino, dev.path, dev.mode, rdev=(dev.major, dev.minor))
        ino += 1
    _entry(out, 0, _TRAILER, 0)


def write_initramfs(root: Path, dest: Path, devices: tuple[DeviceNode, ...] = ()) -> None:
    """Write ``root`` as a gzip-compressed newc cpio archive (the kernel's initramfs format)."""
    with dest.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        write_newc(root, gz, devices)
