"""VM images: imported from a path on the server host, a streamed upload or an http(s) URL, checked
with qemu-img, hashed, and stored under the data dir. Disk images (qcow2, raw) are the read-only
backing files of their instances; ISO installer images are the CD-ROM of theirs. Either way an
image in use cannot be deleted.

Properties an image carries: ``os`` (free text such as "debian12"), ``min_disk`` (GiB) and
``min_memory`` (MiB), checked when an instance is created from it."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudlet.db.models import Image, Instance, Operation
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.drivers import qemu_img
from cloudlet.errors import Conflict, Forbidden, InUse, Invalid, NotFound
from cloudlet.services import image_download
from cloudlet.services.context import RequestContext
from cloudlet.services.names import IMAGE_NAME, check_name, is_uuid, lookup
from cloudlet.services.operations import OperationContext, Operations

FORMATS = ("qcow2", "raw", "iso")
CHUNK = 1024 * 1024
GIB = 1024**3
ISO_MAGIC_OFFSET = 0x8001  # "CD001" of the primary volume descriptor, in sector 16
ISO_MAGIC = b"CD001"
OS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+()/-]{0,63}$")
DOWNLOAD_SHARE = 80  # percent of an URL import's progress that is the download
FREE_SPACE_RESERVE = 256 * 1024 * 1024  # what a download leaves free on the images' file system


@dataclasses.dataclass(frozen=True)
class ImageProperties:
    """What an image says about its guest: the OS, and the smallest disk (GiB) and memory (MiB)
    an instance of it gets. None: not said."""

    os: str | None = None
    min_disk: int | None = None
    min_memory: int | None = None

    def checked(self) -> ImageProperties:
        if self.os is not None and not OS_NAME.match(self.os):
            raise Invalid(
                "os must be 1-64 letters, digits, spaces or . _ + ( ) / -, starting with a letter or digit",
                code="invalid_properties",
            )
        if self.min_disk is not None and self.min_disk < 1:
            raise Invalid("min_disk is at least 1 GiB", code="invalid_properties")
        if self.min_memory is not None and self.min_memory < 1:
            raise Invalid("min_memory is at least 1 MiB", code="invalid_properties")
        return self


def is_iso9660(path: Path) -> bool:
    """Whether the file carries an ISO 9660 primary volume descriptor."""
    with path.open("rb") as fh:
        fh.seek(ISO_MAGIC_OFFSET)
        return fh.read(len(ISO_MAGIC)) == ISO_MAGIC


def check_format(requested: str | None) -> str | None:
    if requested is not None and requested not in FORMATS:
        raise Invalid(f"format must be one of {', '.join(FORMATS)}", code="invalid_format")
    return requested


def check_fits(image: Image, disk_gb: int, memory_mb: int) -> None:
    """An instance of ``image`` gets at least the image's own size (a disk image) and what its
    ``min_disk`` and ``min_memory`` properties ask."""
    own = 0 if image.format == "iso" else math.ceil((image.virtual_size or 0) / GIB)
    min_disk = max(own, image.min_disk or 0)
    if disk_gb < min_disk:
        raise Invalid(
            f"disk of {disk_gb} GiB is smaller than image {image.name!r} needs ({min_disk} GiB)",
            code="disk_too_small",
            minimum_gb=min_disk,
        )
    if image.min_memory and memory_mb < image.min_memory:
        raise Invalid(
            f"memory of {memory_mb} MiB is less than image {image.name!r} needs ({image.min_memory} MiB)",
            code="memory_too_small",
            minimum_mb=image.min_memory,
        )


def hash_stream(src: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def hash_file(path: Path) -> tuple[str, int]:
    """(sha256, bytes) of a file, read in chunks."""
    with path.open("rb") as fh:
        return hash_stream(fh)


def copy_hashing(
    src: BinaryIO, dest: Path, progress: Any = None, total: int | None = None
) -> tuple[str, int]:
    """Copy a stream to ``dest`` in chunks (never whole in memory); return (sha256, bytes)."""
    digest, written = hashlib.sha256(), 0
    with dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            written += len(chunk)
            if progress is not None and total:
                progress(written, total)
    return digest.hexdigest(), written


def check_raw_disk(path: Path) -> None:
    """Any file that is not qcow2 is opened as raw (other formats are never parsed: a vmdk, say,
    can name host files), so a raw image must also look like a bootable disk: whole 512-byte
    sectors and the boot signature of an MBR (GPT disks carry a protective MBR)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(510)
        signature = fh.read(2)
    if size % 512 or signature != b"\x55\xaa":
        raise Invalid(
            "not a qcow2 image, an ISO or a raw disk image (whole 512-byte sectors and an MBR/GPT "
            "boot signature); other formats (vmdk, vdi, vhdx...) are not accepted: convert them "
            "with qemu-img convert -O qcow2",
            code="invalid_image",
        )


class Images:
    def __init__(
        self,
        sessions: SessionFactory,
        ops: Operations,
        images_dir: Path,
        import_dirs: list[Path],
        *,
        downloader: image_download.Downloader | None = None,
    ) -> None:
        self.sessions = sessions
        self.ops = ops
        self.dir = images_dir
        self.import_dirs = [d.resolve() for d in import_dirs]
        self.downloader = downloader or image_download.Downloader()

    def get(self, session: Session, ctx: RequestContext, ref: str) -> Image:
        """The workspace's own image, or one a system admin published to all."""
        return usable_image(session, ctx.workspace_id, ref)

    def all(self, session: Session, ctx: RequestContext) -> list[Image]:
        """The workspace's images and the published ones."""
        return list(
            session.scalars(
                select(Image)
                .where((Image.workspace_id == ctx.workspace_id) | Image.public.is_(True))
                .order_by(Image.name, Image.workspace_id != ctx.workspace_id)
            )
        )

    def update(
        self,
        ctx: RequestContext,
        ref: str,
        *,
        public: bool | None = None,
        properties: dict[str, Any] | None = None,
    ) -> Image:
        """Change an image's properties (``os``, ``min_disk``, ``min_memory``: the keys given, None
        clears one) and, for system admins, whether it is published to every workspace."""
        if public is not None:
            ctx.require_admin("publish images")
        props = properties or {}
        unknown = set(props) - {"os", "min_disk", "min_memory"}
        if unknown:
            raise Invalid(
                f"unknown image properties: {', '.join(sorted(unknown))}", code="invalid_properties"
            )
        with transaction(self.sessions) as s:
            row = lookup(s, Image, ctx.workspace_id, ref, "image")
            current = ImageProperties(os=row.os, min_disk=row.min_disk, min_memory=row.min_memory)
            checked = dataclasses.replace(current, **props).checked()
            row.os, row.min_disk, row.min_memory = checked.os, checked.min_disk, checked.min_memory
            if public is not None:
                row.public = public
            s.flush()
            s.expunge(row)
            return row

    def add_row(
        self, session: Session, ctx: RequestContext, name: str, source: str, props: ImageProperties
    ) -> Image:
        """Insert an image in status "importing" into the caller's transaction (409 for a taken name)."""
        check_name(name, IMAGE_NAME, "image name")
        props = props.checked()
        row = Image(
            workspace_id=ctx.workspace_id,
            name=name,
            status="importing",
            source=source,
            os=props.os,
            min_disk=props.min_disk,
            min_memory=props.min_memory,
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(f"an image named {name!r} exists", code="name_taken") from None
        return row

    def _new_row(
        self, ctx: RequestContext, name: str, source: str, props: ImageProperties
    ) -> tuple[str, Operation]:
        with transaction(self.sessions) as s:
            row = self.add_row(s, ctx, name, source, props)
            op = self.ops.record(s, ctx, "image.import", "image", row.id)
            return row.id, op

    def import_url(
        self,
        ctx: RequestContext,
        name: str,
        url: str,
        *,
        sha256: str | None = None,
        fmt: str | None = None,
        props: ImageProperties = ImageProperties(),
    ) -> str:
        """Download an image from an http(s) URL in an operation (progress from Content-Length),
        verify its sha256 when given, then check it like any import; returns the operation id."""
        check_name(name, IMAGE_NAME, "image name")
        image_download.check_url(url)
        expected = image_download.check_sha256(sha256) if sha256 is not None else None
        check_format(fmt)
        props.checked()
        image_id, op = self._new_row(ctx, name, url, props)

        def step(octx: OperationContext) -> dict[str, Any]:
            def report(done: int, total: int | None) -> None:
                shown = _bytes(done) + (f" of {_bytes(total)}" if total else "")
                octx.progress(DOWNLOAD_SHARE * done // total if total else 0, f"downloaded {shown}")

            staging = self.dir / f".download-{image_id}"
            octx.on_undo("remove downloaded file", lambda: staging.unlink(missing_ok=True))
            self.dir.mkdir(parents=True, exist_ok=True)
            octx.progress(0, "connecting")
            got = self.downloader.fetch(
                url,
                staging,
                progress=report,
                max_bytes=shutil.disk_usage(self.dir).free - FREE_SPACE_RESERVE,
            )
            if expected is not None and got.sha256 != expected:
                raise Invalid(
                    f"sha256 mismatch: expected {expected}, the download has {got.sha256}",
                    code="checksum_mismatch",
                    expected=expected,
                    actual=got.sha256,
                )
            return self.finish_import(octx, image_id, staging, got.sha256, got.size, fmt)

        self.ops.launch(op, step, finally_=lambda: self.forget_if_importing(image_id))
        return op.id

    def import_path(
        self,
        ctx: RequestContext,
        name: str,
        path: str,
        *,
        fmt: str | None = None,
        props: ImageProperties = ImageProperties(),
    ) -> str:
        """Import a file that is on the server host; returns the operation id."""
        check_format(fmt)
        src = Path(path)
        if not src.is_absolute():
            raise Invalid(f"source path must be absolute: {path!r}", code="invalid_path")
        src = src.resolve()  # symlinks must not lead out of the allowed folders
        if not any(src.is_relative_to(d) for d in self.import_dirs):
            allowed = ", ".join(str(d) for d in self.import_dirs)
            raise Forbidden(
                f"{path} is outside the folders images may be imported from ({allowed}); upload it instead",
                code="import_path_forbidden",
            )
        if not src.is_file():
            raise Invalid(f"no such file on the server host: {path}", code="source_not_found")
        image_id, op = self._new_row(ctx, name, f"file://{src}", props)

        def step(octx: OperationContext) -> dict[str, Any]:
            staging = self.dir / f".import-{image_id}"
            octx.on_undo("remove staged file", lambda: staging.unlink(missing_ok=True))
            self.dir.mkdir(parents=True, exist_ok=True)
            total = src.stat().st_size
            with src.open("rb") as fh:
                sha, size = copy_hashing(fh, staging, lambda n, t: octx.progress(int(80 * n / t)), total)
            return self.finish_import(octx, image_id, staging, sha, size, fmt)

        self.ops.launch(op, step, finally_=lambda: self.forget_if_importing(image_id))
        return op.id

    def staging_path(self, name: str) -> Path:
        """Where an upload is spooled before ``import_staged``; checks the name first so a bad
        request fails before any byte is written."""
        check_name(name, IMAGE_NAME, "image name")
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / f".upload-{os.urandom(8).hex()}"

    def import_staged(
        self,
        ctx: RequestContext,
        name: str,
        staging: Path,
        *,
        fmt: str | None = None,
        props: ImageProperties = ImageProperties(),
    ) -> str:
        """Import an uploaded file spooled at ``staging`` (which the operation consumes)."""
        check_format(fmt)
        if staging.stat().st_size == 0:
            raise Invalid("the upload is empty", code="invalid_image")
        image_id, op = self._new_row(ctx, name, "upload", props)

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.on_undo("remove staged file", lambda: staging.unlink(missing_ok=True))
            with staging.open("rb") as fh:
                sha, size = hash_stream(fh)
            return self.finish_import(octx, image_id, staging, sha, size, fmt)

        self.ops.launch(op, step, finally_=lambda: self.forget_if_importing(image_id))
        return op.id

    def finish_import(
        self,
        octx: OperationContext,
        image_id: str,
        staging: Path,
        sha: str,
        size: int,
        requested: str | None = None,
    ) -> dict[str, Any]:
        """Check the file at ``staging`` (``qemu_img.inspect``: nothing outside itself; then the ISO
        9660 or MBR signature, or qcow2's consistency), move it into place and mark the image
        ready. ``requested``: the format the importer said it is."""
        octx.progress(85, "checking image")
        info = qemu_img.inspect(staging)
        fmt = _effective_format(staging, info.format, requested)
        if fmt == "raw":
            check_raw_disk(staging)
        qemu_img.check(staging, fmt)
        final = self.dir / f"{image_id}.{fmt}"
        staging.rename(final)
        octx.on_undo("remove image file", lambda: final.unlink(missing_ok=True))
        with transaction(self.sessions) as s:
            row = s.get(Image, image_id)
            if row is None:
                raise Conflict("the image was deleted during its import", code="image_deleted")
            row.status, row.format, row.virtual_size = "ready", fmt, info.virtual_size
            row.file_size, row.sha256, row.path = size, sha, str(final)
        return {"image_id": image_id, "format": fmt, "virtual_size": info.virtual_size, "sha256": sha}

    def forget_if_importing(self, image_id: str) -> None:
        """After an import operation: a row still 'importing' means it failed, so drop it."""
        with transaction(self.sessions) as s:
            row = s.get(Image, image_id)
            if row is not None and row.status == "importing":
                s.delete(row)

    def delete(self, ctx: RequestContext, ref: str) -> str:
        with transaction(self.sessions) as s:
            row = lookup(s, Image, ctx.workspace_id, ref, "image")  # only its own workspace deletes it
            users = s.scalar(select(func.count()).where(Instance.image_id == row.id)) or 0
            if users:
                raise InUse(f"image {row.name!r} is used by {users} instance(s)", code="image_in_use")
            if row.status == "importing":
                raise Conflict(f"image {row.name!r} is still importing", code="image_busy")
            op = self.ops.record(s, ctx, "image.delete", "image", row.id)
            path = Path(row.path) if row.path else None
            s.delete(row)

        def step(octx: OperationContext) -> None:
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

        self.ops.launch(op, step)
        return op.id


def check_image_file(path: Path, fmt: str) -> None:
    """Before an image's file is used (a VM made or cloned from it, its disk published, an ISO in
    a CD-ROM): it is still self-contained and of its recorded format. Images imported before
    imports were checked this way may name host files; they are refused here (422
    ``unsafe_image``) before anything is made from them."""
    qemu_img.inspect(path, "raw" if fmt == "iso" else fmt)


def usable_image(session: Session, workspace_id: str, ref: str) -> Image:
    """An image a workspace may use: its own (first) or a published one; else 404."""
    try:
        return lookup(session, Image, workspace_id, ref, "image")
    except NotFound:
        column = Image.id if is_uuid(ref) else Image.name
        found = session.scalar(select(Image).where(column == ref, Image.public.is_(True)).limit(1))
        if found is None:
            raise
        return found


def _effective_format(path: Path, detected: str, requested: str | None) -> str:
    """A file is qcow2 or raw (``qemu_img.inspect``): a raw file with an ISO 9660 volume descriptor
    is an ISO, unless the importer says "raw" (a hybrid ISO that is also a bootable disk, used as
    a disk)."""
    fmt = "iso" if detected == "raw" and requested != "raw" and is_iso9660(path) else detected
    if requested == "iso" and fmt != "iso":
        raise Invalid(
            "not an ISO 9660 image: no CD001 volume descriptor at offset 0x8001", code="invalid_image"
        )
    if fmt not in FORMATS:
        raise Invalid(f"unsupported image format {fmt!r}: use qcow2, raw or iso", code="invalid_image")
    if requested is not None and requested != fmt:
        raise Invalid(f"the file is a {fmt} image, not {requested}", code="format_mismatch")
    return fmt


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
