"""qemu-img, spoken through its JSON output (never by scraping text)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cloudlet.errors import DriverError, Invalid

QEMU_IMG = "qemu-img"
COPY_TIMEOUT = 6 * 3600  # seconds a whole-disk copy may take (large disks, slow storage)


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    actual_size: int
    backing_file: str | None


def _run(args: list[str], what: str, timeout: float = 600) -> str:
    try:
        proc = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as err:
        raise DriverError("qemu-img is not installed") from err
    if proc.returncode != 0:
        raise DriverError(f"{what}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def info(path: Path) -> ImageInfo:
    """Inspect an image file. A file qemu-img cannot read is an ``Invalid`` image, not a backend error."""
    try:
        out = _run(["info", "--output=json", "--force-share", str(path)], f"inspecting {path.name}")
    except DriverError as err:
        raise Invalid(f"not a disk image qemu-img can read: {err.detail}", code="invalid_image") from err
    data = json.loads(out)
    return ImageInfo(
        format=data["format"],
        virtual_size=int(data["virtual-size"]),
        actual_size=int(data.get("actual-size", 0)),
        backing_file=data.get("backing-filename"),
    )


def check(path: Path, fmt: str) -> None:
    """Consistency check of a qcow2 image (raw images have nothing to check)."""
    if fmt != "qcow2":
        return
    try:
        _run(["check", "--output=json", "-f", fmt, str(path)], f"checking {path.name}")
    except DriverError as err:
        raise Invalid(f"image is corrupt: {err.detail}", code="invalid_image") from err


def create_overlay(path: Path, backing: Path, backing_format: str, size_bytes: int) -> None:
    """A qcow2 linked clone of ``backing``, as large as ``size_bytes``. Creation time does not grow
    with the size: qcow2 allocates on write."""
    _run(
        ["create", "-q", "-f", "qcow2", "-F", backing_format, "-b", str(backing), str(path), str(size_bytes)],
        f"creating disk {path.name}",
    )


def grow(path: Path, size_bytes: int) -> None:
    """Grow a (stopped VM's) qcow2 disk to ``size_bytes``; shrinking is never asked of it."""
    _run(["resize", "-q", "-f", "qcow2", str(path), str(size_bytes)], f"growing disk {path.name}")


def create_blank(path: Path, size_bytes: int) -> None:
    """An empty qcow2 disk of ``size_bytes`` (for a VM that installs its OS from an ISO)."""
    _run(["create", "-q", "-f", "qcow2", str(path), str(size_bytes)], f"creating disk {path.name}")


def convert(
    source: Path,
    dest: Path,
    *,
    backing: tuple[Path, str] | None = None,
    snapshot: str | None = None,
) -> None:
    """Copy ``source`` (its whole backing chain, or the internal ``snapshot`` of it) into a new
    qcow2 ``dest``. With ``backing`` (path, format), ``dest`` is an overlay of that file holding
    only what differs from it, which must be the content ``source`` itself was built on.

    A snapshot is read with the image shared: its clusters never change while the VM that owns the
    image runs on, and cloudlet holds the VM's lock so the snapshot cannot be deleted meanwhile."""
    args = ["convert", "-q", "-O", "qcow2"]
    if snapshot is not None:
        args += ["-U", "-l", f"snapshot.name={snapshot}"]
    if backing is not None:
        args += ["-B", str(backing[0]), "-F", backing[1]]
    _run([*args, str(source), str(dest)], f"copying disk to {dest.name}", timeout=COPY_TIMEOUT)
