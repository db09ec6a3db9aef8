"""Container images on the engine: list and filter, pull (an operation with progress), registry
search, delete, prune, and builds from Dockerfile projects (an operation with a live log).

The engine's tags are host-wide, so each workspace's tags are recorded (``ContainerImageClaim``):
a workspace sees and uses its own tags and the host's unclaimed images, never another
workspace's, and cannot pull or build over a tag another workspace holds.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from docker.utils import parse_repository_tag
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudlet.db.models import ContainerImageClaim
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.drivers.containers import BuildFailed, ContainerDriver, ContainerImage
from cloudlet.errors import CloudletError, Conflict, Forbidden, Invalid, NotFound
from cloudlet.services.containers import check_image_ref
from cloudlet.services.context import RequestContext
from cloudlet.services.operations import OperationContext, Operations
from cloudlet.services.oplogs import OperationLogs

SEARCH_TERM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


class BuildError(CloudletError):
    status, code, title = 422, "build_failed", "Image build failed"


def normal_ref(ref: str) -> str:
    """``repo`` and ``repo:latest`` are one tag."""
    if ref.startswith("sha256:") or "@" in ref:
        return ref
    repository, tag = parse_repository_tag(ref)
    return f"{repository}:{tag or 'latest'}"


def claims(session: Session, refs: Iterable[str] | None = None) -> dict[str, set[str]]:
    """Tag -> the workspaces holding it (of ``refs`` only, when given)."""
    out: dict[str, set[str]] = {}
    query = select(ContainerImageClaim.ref, ContainerImageClaim.workspace_id)
    if refs is not None:
        query = query.where(ContainerImageClaim.ref.in_(list(refs)))
    for ref, ws in session.execute(query):
        out.setdefault(ref, set()).add(ws)
    return out


def visible(image: ContainerImage, ctx: RequestContext, held: dict[str, set[str]]) -> bool:
    """Its own tags, or an image no workspace holds (a host image); system admins see all."""
    if ctx.is_admin:
        return True
    holders = [held.get(t, set()) for t in image.tags]
    if any(ctx.workspace_id in h for h in holders):
        return True
    return not any(holders)


def usable_image(session: Session, driver: ContainerDriver, ctx: RequestContext, ref: str) -> ContainerImage:
    """An image the workspace may run, by tag or id; 404 ``image_not_found`` otherwise."""
    not_found = NotFound(f"container image {ref[:80]!r} not found", code="image_not_found")
    try:
        check_image_ref(ref)
        image = driver.image(ref)
    except (Invalid, NotFound):
        raise not_found from None
    if not visible(image, ctx, claims(session, image.tags)):
        raise not_found
    return image


class ContainerImages:
    def __init__(
        self, sessions: SessionFactory, ops: Operations, logs: OperationLogs, driver: ContainerDriver
    ) -> None:
        self.sessions = sessions
        self.ops = ops
        self.logs = logs
        self.driver = driver

    def local(self, ctx: RequestContext, contains: str | None = None) -> list[ContainerImage]:
        """The workspace's images and the host's shared ones, newest first; ``contains`` keeps
        those whose tag or id contains it."""
        with self.sessions() as s:
            held = claims(s)
        images = [i for i in self.driver.list_images() if visible(i, ctx, held)]
        if contains:
            needle = contains.lower()
            images = [i for i in images if needle in i.id.lower() or any(needle in t.lower() for t in i.tags)]
        return images

    def get(self, ctx: RequestContext, ref: str) -> ContainerImage:
        with self.sessions() as s:
            return usable_image(s, self.driver, ctx, ref)

    def delete(self, ctx: RequestContext, ref: str, *, force: bool = False) -> None:
        """Remove the workspace's tag; the engine forgets it once no workspace holds it. A shared
        host image can only be deleted by a system admin."""
        with transaction(self.sessions) as s:
            image = usable_image(s, self.driver, ctx, ref)
            wanted = normal_ref(ref)
            tag = wanted if wanted in image.tags else None
            held = claims(s, image.tags)
            mine = [t for t in image.tags if ctx.workspace_id in held.get(t, set())]
            if not mine and not ctx.is_admin:
                raise Forbidden(
                    "a shared host image can only be deleted by a system admin", code="permission_denied"
                )
            targets = [tag] if tag else mine or list(image.tags)
            for t in targets:
                s.execute(
                    delete(ContainerImageClaim).where(
                        ContainerImageClaim.ref == t, ContainerImageClaim.workspace_id == ctx.workspace_id
                    )
                )
            others = [t for t in targets if held.get(t, set()) - {ctx.workspace_id}]
            if others and not ctx.is_admin:
                return  # another workspace still holds the tag: only our claim goes
            if tag is not None:
                self.driver.remove_image(tag, force=force)
            else:
                self.driver.remove_image(image.id, force=force)

    def prune(self, ctx: RequestContext) -> dict[str, Any]:
        """Remove dangling images engine-wide (system admins)."""
        ctx.require_admin("prune images: pruning affects every workspace")
        removed, reclaimed = self.driver.prune_images()
        return {"removed": removed, "space_reclaimed": reclaimed}

    def search(self, term: str, limit: int = 25) -> list[Any]:
        if not SEARCH_TERM.fullmatch(term):
            raise Invalid(f"invalid search term {term[:60]!r}", code="invalid_search")
        return self.driver.search_images(term, limit)

    def _claim(self, ctx: RequestContext, refs: list[str]) -> None:
        """Record the tags as the workspace's; a tag another workspace holds is refused (409)."""
        with transaction(self.sessions) as s:
            held = claims(s)
            for ref in refs:
                others = held.get(ref, set()) - {ctx.workspace_id}
                if others:
                    raise Conflict(
                        f"tag {ref!r} belongs to another workspace; pick another", code="tag_taken"
                    )
                if ctx.workspace_id not in held.get(ref, set()):
                    try:
                        with s.begin_nested():
                            s.add(ContainerImageClaim(workspace_id=ctx.workspace_id, ref=ref))
                    except IntegrityError:
                        continue  # claimed concurrently by this same workspace

    def pull(self, ctx: RequestContext, ref: str) -> str:
        """Start pulling ``ref`` into the workspace; returns the operation id."""
        check_image_ref(ref)
        tag = normal_ref(ref)
        self._claim(ctx, [tag])
        with transaction(self.sessions) as s:
            op = self.ops.record(s, ctx, "image.pull", "container_image", None)
        log = self.logs.writer(op.id, ctx.workspace_id)

        def step(octx: OperationContext) -> dict[str, Any]:
            octx.on_undo("forget the tag", lambda: self._unclaim_if_absent(ctx, tag))
            try:
                octx.progress(5, f"pulling {ref}")
                image = self.driver.pull_image(ref, log)
            finally:
                log.close()
            return image_json(image)

        self.ops.launch(op, step)
        return op.id

    def _unclaim_if_absent(self, ctx: RequestContext, tag: str) -> None:
        try:
            self.driver.image(tag)
            return  # the engine has it after all
        except NotFound:
            pass
        with transaction(self.sessions) as s:
            s.execute(
                delete(ContainerImageClaim).where(
                    ContainerImageClaim.ref == tag, ContainerImageClaim.workspace_id == ctx.workspace_id
                )
            )

    def build(self, ctx: RequestContext, context_dir: Path, tags: list[str], project: str) -> str:
        """Build an image from a project folder; the operation's log is the build output and its
        result the image id and tags. A failing step fails the operation with that step named."""
        normal = [normal_ref(check_image_ref(t)) for t in tags]
        self._claim(ctx, normal)
        with transaction(self.sessions) as s:
            op = self.ops.record(s, ctx, "image.build", "project", None)
            op.message = f"building {project}"
        log = self.logs.writer(op.id, ctx.workspace_id)

        def step(octx: OperationContext) -> dict[str, Any]:
            for tag in normal:
                octx.on_undo(f"forget {tag}", functools.partial(self._unclaim_if_absent, ctx, tag))
            try:
                octx.progress(5, f"building {', '.join(tags) or project}")
                try:
                    image = self.driver.build_image(context_dir, tags, log)
                except BuildFailed as err:
                    raise BuildError(
                        f"step {err.step!r} failed: {err.message}" if err.step else err.message,
                        step=err.step,
                        output=err.output,
                    ) from None
            finally:
                log.close()
            return {**image_json(image), "project": project}

        self.ops.launch(op, step)
        return op.id


def image_json(image: ContainerImage) -> dict[str, Any]:
    return {
        "id": image.id,
        "tags": list(image.tags),
        "size": image.size,
        "created": image.created.isoformat(),
        "in_use": image.in_use,
    }
