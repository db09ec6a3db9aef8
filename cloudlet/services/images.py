"""VM disk images: imported from a path on the server host or a streamed upload, checked with
qemu-img, hashed, and stored under the data dir. Instances use them as read-only backing files,
so an image in use cannot be deleted."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudlet.db.models import Image, Instance, Operation
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.drivers import qemu_img
from cloudlet.errors import Conflict, Forbidden, InUse, Invalid, NotFound
from cloudlet.services.context import RequestContext
from cloudlet.services.names import IMAGE_NAME, check_name, is_uuid, lookup
from cloudlet.services.operations import OperationContext, Operations

FORMATS = ("qcow2", "raw")
CHUNK = 1024 * 1024


def hash_stream(src: BinaryIO) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


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
    """qemu-img calls any file "raw", so a raw image must also look like a bootable disk: whole
    512-byte sectors and the boot signature of an MBR (GPT disks carry a protective MBR)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(510)
        signature = fh.read(2)
    if size % 512 or signature != b"\x55\xaa":
        raise Invalid(
            "not a raw disk image: expected whole 512-byte sectors and an MBR/GPT boot signature",
            code="invalid_image",
        )


class Images:
    def __init__(
        self, sessions: SessionFactory, ops: Operations, images_dir: Path, import_dirs: list[Path]
    ) -> None:
        self.sessions = sessions
        self.ops = ops
        self.dir = images_dir
        self.import_dirs = [d.resolve() for d in import_dirs]

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

    def publish(self, ctx: RequestContext, ref: str, public: bool) -> Image:
        """Share an image with every workspace, or stop sharing it (system admins only)."""
        ctx.require_admin("publish images")
        with transaction(self.sessions) as s:
            row = lookup(s, Image, ctx.workspace_id, ref, "image")
            row.public = public
            s.flush()
            s.expunge(row)
            return row

    def _new_row(self, ctx: RequestContext, name: str, source: str) -> tuple[str, Operation]:
        check_name(name, IMAGE_NAME, "image name")
        with transaction(self.sessions) as s:
            row = Image(workspace_id=ctx.workspace_id, name=name, status="importing", source=source)
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"an image named {name!r} exists", code="name_taken") from None
            op = self.ops.record(s, ctx, "image.import", "image", row.id)
            return row.id, op

    def import_path(self, ctx: RequestContext, name: str, path: str) -> str:
        """Import a file that is on the server host; returns the operation id."""
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
        image_id, op = self._new_row(ctx, name, f"file://{src}")

        def step(octx: OperationContext) -> dict[str, Any]:
            staging = self.dir / f".import-{image_id}"
            octx.on_undo("remove staged file", lambda: staging.unlink(missing_ok=True))
            self.dir.mkdir(parents=True, exist_ok=True)
            total = src.stat().st_size
            with src.open("rb") as fh:
                sha, size = copy_hashing(fh, staging, lambda n, t: octx.progress(int(80 * n / t)), total)
            return self._finish_import(octx, image_id, staging, sha, size)

        self.ops.launch(op, step, finally_=lambda: self._forget_if_importing(image_id))
        return op.id

    def staging_path(self, name: str) -> Path:
        """Where an upload is spooled before ``import_staged``; checks the name first so a bad
        request fails before any byte is written."""
        check_name(name, IMAGE_NAME, "image name")
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / f".upload-{os.urandom(8).hex()}"

    def import_staged(self, ctx: RequestContext, name: str, staging: Path) -> str:
        """Import an uploaded file spooled at ``staging`` (which the operation consumes)."""
        if staging.stat().st_size == 0:
            raise Invalid("the upload is empty", code="invalid_image")
        image_id, op = self._new_row(ctx, name, "upload")

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.on_undo("remove staged file", lambda: staging.unlink(missing_ok=True))
            with staging.open("rb") as fh:
                sha, size = hash_stream(fh)
            return self._finish_import(octx, image_id, staging, sha, size)

        self.ops.launch(op, step, finally_=lambda: self._forget_if_importing(image_id))
        return op.id

    def _finish_import(
        self, octx: OperationContext, image_id: str, staging: Path, sha: str, size: int
    ) -> dict[str, Any]:
        octx.progress(85, "checking image")
        info = qemu_img.info(staging)
        if info.format not in FORMATS:
            raise Invalid(f"unsupported image format {info.format!r}: use qcow2 or raw", code="invalid_image")
        if info.backing_file:
            raise Invalid("images with a backing file are not accepted", code="invalid_image")
        if info.format == "raw":
            check_raw_disk(staging)
        qemu_img.check(staging, info.format)
        final = self.dir / f"{image_id}.{info.format}"
        staging.rename(final)
        octx.on_undo("remove image file", lambda: final.unlink(missing_ok=True))
        with transaction(self.sessions) as s:
            row = s.get(Image, image_id)
            if row is None:
                raise Conflict("the image was deleted during its import", code="image_deleted")
            row.status, row.format, row.virtual_size = "ready", info.format, info.virtual_size
            row.file_size, row.sha256, row.path = size, sha, str(final)
        return {"image_id": image_id, "format": info.format, "virtual_size": info.virtual_size, "sha256": sha}

    def _forget_if_importing(self, image_id: str) -> None:
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
