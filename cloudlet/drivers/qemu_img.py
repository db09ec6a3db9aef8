"""qemu-img, spoken through its JSON output (never by scraping text).

Images come from users, and an image file can name other files for QEMU to open: a qcow2 backing
file or external data file (a host file, or a ``json:``/``nbd:``/``http:`` name QEMU connects to),
a vmdk extent. ``inspect`` is the one gate: every image is passed through it when imported and
again before every use, and it refuses (422 ``unsafe_image``) any file that reaches outside itself.
Only qcow2 and raw are ever opened, always with their format given (``-f``): no other format's
parser reads a user's file, and a raw file is never probed into something else."""

from __future__ import annotations

import functools
import json
import logging
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudlet.errors import DriverError, Invalid

log = logging.getLogger(__name__)

QEMU_IMG = "qemu-img"
COPY_TIMEOUT = 6 * 3600  # seconds a whole-disk copy may take (large disks, slow storage)
INSPECT_TIMEOUT = 120  # seconds an inspection may take (it reads metadata only)
SAFE_FORMATS = ("qcow2", "raw")
# The qcow2 header (docs/interop/qcow2.txt in QEMU): magic, version, backing file offset; from
# version 3 the incompatible feature bits, of which bit 2 is "external data file".
QCOW2_MAGIC = b"QFI\xfb"
_QCOW2_START = struct.Struct(">4sIQ")
_QCOW2_INCOMPATIBLE = struct.Struct(">Q")
_QCOW2_INCOMPATIBLE_AT = 72
_QCOW2_DATA_FILE_BIT = 1 << 2
UNSAFE = "unsafe_image"


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    actual_size: int
    backing_file: str | None


def unsafe(detail: str) -> Invalid:
    """The refusal of an image that reaches outside its own file (422 ``unsafe_image``)."""
    return Invalid(f"unsafe image: {detail}", code=UNSAFE)


@functools.cache
def _no_network() -> tuple[str, ...]:
    """The command prefix that runs an inspection in an empty network namespace, so that no name
    inside an image makes qemu-img connect anywhere: ``unshare --net`` as root, in a user
    namespace otherwise. Without either the inspection runs as it is (and says so once): the
    header check in ``sniff`` still keeps qemu-img from following any name."""
    for prefix in (("unshare", "--net"), ("unshare", "--user", "--map-root-user", "--net")):
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    log.warning("unshare --net is not possible here: image inspections run with the host's network")
    return ()


def _run(
    args: list[str], what: str, timeout: float = 600, *, isolated: bool = False, invalid: bool = False
) -> str:
    """Run qemu-img; ``isolated``: without network (inspections of users' files); ``invalid``: a
    failure is the file's fault (422 ``invalid_image``), not a backend error."""
    prefix = _no_network() if isolated else ()
    try:
        proc = subprocess.run(
            [*prefix, QEMU_IMG, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as err:
        raise DriverError("qemu-img is not installed") from err
    except subprocess.TimeoutExpired as err:
        raise DriverError(f"{what}: qemu-img took longer than {timeout:.0f} s") from err
    if proc.returncode != 0:
        detail = f"{what}: {proc.stderr.strip() or proc.stdout.strip()}"
        if invalid:
            raise Invalid(f"not a disk image qemu-img can read: {detail}", code="invalid_image")
        raise DriverError(detail)
    return proc.stdout


def sniff(path: Path) -> str:
    """The format a user's file is opened as: qcow2 when it starts with qcow2's magic (QEMU's own
    test), else raw. Read here, before any qemu-img process opens the file, a qcow2 header that
    names a backing file or an external data file is refused: qemu-img would open those names
    (``--backing-chain`` follows backing files; qemu-img builds without the CVE-2024-4467 fix
    open data files even for ``info``)."""
    with path.open("rb") as fh:
        header = fh.read(_QCOW2_INCOMPATIBLE_AT + _QCOW2_INCOMPATIBLE.size)
    if len(header) < _QCOW2_START.size or not header.startswith(QCOW2_MAGIC):
        return "raw"
    _, version, backing_offset = _QCOW2_START.unpack_from(header)
    if backing_offset:
        raise unsafe("the qcow2 image has a backing file; images must be self-contained")
    if version >= 3 and len(header) == _QCOW2_INCOMPATIBLE_AT + _QCOW2_INCOMPATIBLE.size:
        (incompatible,) = _QCOW2_INCOMPATIBLE.unpack_from(header, _QCOW2_INCOMPATIBLE_AT)
        if incompatible & _QCOW2_DATA_FILE_BIT:
            raise unsafe("the qcow2 image keeps its data in an external data file")
    return "qcow2"


def refusal(layer: dict[str, Any]) -> str | None:
    """Why one layer of ``qemu-img info --output=json`` reaches outside its own file, or None."""
    fmt = layer.get("format")
    filename = str(layer.get("filename", ""))
    data = (layer.get("format-specific") or {}).get("data") or {}
    backing = layer.get("full-backing-filename") or layer.get("backing-filename")
    if fmt not in SAFE_FORMATS:
        return f"format {fmt!r} is not accepted (only qcow2 and raw; others can name other files)"
    if not filename.startswith("/"):  # json:{...}, nbd:, http(s):, any proto: pseudo-file
        return f"layer {filename!r} is not a plain local file"
    if backing:
        return f"it has a backing file ({backing}); images must be self-contained"
    if data.get("data-file"):
        return f"it keeps its data in an external data file ({data['data-file']})"
    return None


def _inspect_json(path: Path, fmt: str, *, chain: bool) -> Any:
    args = ["info", "--output=json", "--force-share", "-f", fmt, str(path)]
    if chain:
        args.insert(1, "--backing-chain")
    out = _run(args, f"inspecting {path.name}", INSPECT_TIMEOUT, isolated=True, invalid=True)
    try:
        return json.loads(out)
    except ValueError as err:
        raise Invalid(f"qemu-img gave no JSON for {path.name}", code="invalid_image") from err


def inspect(path: Path, fmt: str | None = None) -> ImageInfo:
    """Inspect a user's image file (at import, and again before every use) and refuse it, 422
    ``unsafe_image``, if it reaches outside itself: a backing file, a qcow2 external data file, a
    layer that is not a plain local file, a format other than qcow2 or raw. ``fmt``: the format
    the file must have (an image's recorded format, "raw" for an ISO); None at import, where the
    file's header decides. A file qemu-img cannot read is 422 ``invalid_image``.

    In order, each step only once the one before found nothing: the header (``sniff``), then
    qemu-img on this file alone (``info`` never opens backing files), then the whole chain
    (``--backing-chain``), every layer checked; qemu-img always without network."""
    if not path.is_absolute():
        raise ValueError(f"image paths are absolute: {path}")
    found = sniff(path)
    if fmt is not None and fmt != found:
        if found == "qcow2":  # raw/qcow2 confusion: opened without its format, QEMU would follow it
            raise unsafe(f"the {fmt} image {path.name} reads as qcow2")
        raise Invalid(f"the file of this {fmt} image is not {fmt}", code="invalid_image")
    top = _inspect_json(path, found, chain=False)
    reason = refusal(top) if isinstance(top, dict) else "qemu-img described no image"
    if reason is None:
        layers = _inspect_json(path, found, chain=True)
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
            reason = "its backing chain has more than the file itself"
        else:
            reason = refusal(layers[0])
    if reason is not None:
        raise unsafe(reason)
    if top.get("format") != found or top.get("filename") != str(path):
        raise unsafe(f"qemu-img opened {top.get('filename')!r} as {top.get('format')!r}")
    return ImageInfo(
        format=found,
        virtual_size=int(top["virtual-size"]),
        actual_size=int(top.get("actual-size", 0)),
        backing_file=None,
    )


def info(path: Path, fmt: str) -> ImageInfo:
    """Sizes of one of cloudlet's own disk files (never a user's: see ``inspect``), opened as
    ``fmt`` without following its backing chain."""
    data = json.loads(
        _run(["info", "--output=json", "--force-share", "-f", fmt, str(path)], f"reading {path.name}")
    )
    return ImageInfo(
        format=data["format"],
        virtual_size=int(data["virtual-size"]),
        actual_size=int(data.get("actual-size", 0)),
        backing_file=data.get("backing-filename"),
    )


def check(path: Path, fmt: str) -> None:
    """Consistency check of a qcow2 image (raw images have nothing to check). ``qemu-img check``
    opens the image's backing and data files: call it only on a file ``inspect`` passed."""
    if fmt != "qcow2":
        return
    try:
        _run(["check", "--output=json", "-f", fmt, str(path)], f"checking {path.name}", isolated=True)
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
    source_format: str,
    *,
    backing: tuple[Path, str] | None = None,
    snapshot: str | None = None,
) -> None:
    """Copy ``source`` (read as ``source_format``, never probed: its whole backing chain, or the
    internal ``snapshot`` of it) into a new qcow2 ``dest``. With ``backing`` (path, format),
    ``dest`` is an overlay of that file holding only what differs from it, which must be the
    content ``source`` itself was built on.

    A snapshot is read with the image shared: its clusters never change while the VM that owns the
    image runs on, and cloudlet holds the VM's lock so the snapshot cannot be deleted meanwhile."""
    args = ["convert", "-q", "-f", source_format, "-O", "qcow2"]
    if snapshot is not None:
        args += ["-U", "-l", f"snapshot.name={snapshot}"]
    if backing is not None:
        args += ["-B", str(backing[0]), "-F", backing[1]]
    _run([*args, str(source), str(dest)], f"copying disk to {dest.name}", timeout=COPY_TIMEOUT)
