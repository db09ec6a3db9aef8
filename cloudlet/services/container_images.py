"""Container images on the engine: list and filter, pull (an operation with progress), registry
search, delete, prune, and builds from Dockerfile projects (an operation with a live log).

The engine's tags are host-wide, so each workspace's tags are recorded (``ContainerImageClaim``).
A tag is either a workspace's (it pulled or built it) or the host's (made outside cloudlet, or
pulled over a host tag): a workspace sees and uses its own tags and the host's, never another
workspace's, and no workspace can take, hide or remove what another uses:

- a tag is claimed only once its pull or build succeeded (a failed pull claims nothing), and a
  build is tagged only after its tags were claimed;
- a host tag stays the host's: a pull refreshes it for everyone, a build cannot take it;
- an image is visible while any of its tags is the caller's or the host's, so claiming one more
  tag of an image (a build that changes nothing gives the same image id) hides nothing;
- removing an image (its last tag, or by id) is refused while another workspace's container,
  or a container cloudlet does not own, uses it; ``force`` only overrides the caller's own.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from docker.utils import parse_repository_tag
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudlet.db.models import ContainerImageClaim
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.drivers.containers import BuildFailed, ContainerDriver, ContainerImage
from cloudlet.errors import CloudletError, Conflict, Forbidden, InUse, Invalid, NotFound
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


def is_tag(ref: str) -> bool:
    """Whether ``ref`` names a tag (not an image id or a digest)."""
    return not ref.startswith("sha256:") and "@" not in ref and not re.fullmatch(r"[0-9a-f]{12,64}", ref)


def claims(session: Session, refs: Iterable[str] | None = None) -> dict[str, set[str]]:
    """Tag -> the workspaces holding it (of ``refs`` only, when given)."""
    out: dict[str, set[str]] = {}
    query = select(ContainerImageClaim.ref, ContainerImageClaim.workspace_id)
    if refs is not None:
        query = query.where(ContainerImageClaim.ref.in_(list(refs)))
    for ref, ws in session.execute(query):
        out.setdefault(ref, set()).add(ws)
    return out


def _may_see_tag(tag: str, ctx: RequestContext, held: dict[str, set[str]]) -> bool:
    holders = held.get(tag)
    return ctx.is_admin or not holders or ctx.workspace_id in holders


def visible(image: ContainerImage, ctx: RequestContext, held: dict[str, set[str]]) -> bool:
    """Any of its tags is the caller's or the host's (untagged images are no one's); system
    admins see all."""
    return not image.tags or any(_may_see_tag(t, ctx, held) for t in image.tags)


def shown(image: ContainerImage, ctx: RequestContext, held: dict[str, set[str]]) -> ContainerImage:
    """The image with only the tags the caller may see: another workspace's tag names are
    that workspace's business."""
    return dataclasses.replace(image, tags=tuple(t for t in image.tags if _may_see_tag(t, ctx, held)))


def usable_image(session: Session, driver: ContainerDriver, ctx: RequestContext, ref: str) -> ContainerImage:
    """An image the workspace may run, by one of its own or the host's tags, or by id; 404
    ``image_not_found`` otherwise."""
    not_found = NotFound(f"container image {ref[:80]!r} not found", code="image_not_found")
    try:
        check_image_ref(ref)
        image = driver.image(ref)
    except (Invalid, NotFound):
        raise not_found from None
    held = claims(session, image.tags)
    if is_tag(ref) and not _may_see_tag(normal_ref(ref), ctx, held):
        raise not_found
    if not visible(image, ctx, held):
        raise not_found
    return shown(image, ctx, held)


def _taken(tag: str) -> Conflict:
    return Conflict(f"tag {tag!r} belongs to another workspace; pick another", code="tag_taken")


class _TagLocks:
    """One lock per tag while something pulls, builds or moves it in this process: a check that
    a tag is free and the pull or tagging that takes it happen as one step."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, tags: Iterable[str]) -> Iterator[None]:
        names = sorted(set(tags))  # one order for everyone: no deadlock between two builds
        locks = []
        with self._guard:
            for name in names:
                lock, users = self._locks.get(name, (threading.Lock(), 0))
                self._locks[name] = (lock, users + 1)
                locks.append(lock)
        try:
            for lock in locks:
                lock.acquire()
            yield
        finally:
            for lock in locks:
                if lock.locked():
                    lock.release()
            with self._guard:
                for name in names:
                    lock, users = self._locks[name]
                    if users <= 1:
                        del self._locks[name]
                    else:
                        self._locks[name] = (lock, users - 1)


class ContainerImages:
    def __init__(
        self, sessions: SessionFactory, ops: Operations, logs: OperationLogs, driver: ContainerDriver
    ) -> None:
        self.sessions = sessions
        self.ops = ops
        self.logs = logs
        self.driver = driver
        self._tags = _TagLocks()

    def local(self, ctx: RequestContext, contains: str | None = None) -> list[ContainerImage]:
        """The workspace's images and the host's shared ones, newest first, each with the tags
        the caller may see; ``contains`` keeps those whose tag or id contains it."""
        with self.sessions() as s:
            held = claims(s)
        images = [shown(i, ctx, held) for i in self.driver.list_images() if visible(i, ctx, held)]
        if contains:
            needle = contains.lower()
            images = [i for i in images if needle in i.id.lower() or any(needle in t.lower() for t in i.tags)]
        return images

    def get(self, ctx: RequestContext, ref: str) -> ContainerImage:
        with self.sessions() as s:
            return usable_image(s, self.driver, ctx, ref)

    def delete(self, ctx: RequestContext, ref: str, *, force: bool = False) -> None:
        """Remove a tag of the workspace's (by tag) or all of them (by image id). The engine
        forgets a tag once no workspace holds it, and the image with its last tag, unless a
        container of another workspace (or one cloudlet does not own) uses it: that is a 409
        whatever ``force`` says, which overrides only the caller's own containers. The host's
        tags and images are deleted by system admins only."""
        with transaction(self.sessions) as s:
            image = self.driver.image(usable_image(s, self.driver, ctx, ref).id)  # with every tag
            held = claims(s, image.tags)
            mine = {t for t in image.tags if ctx.workspace_id in held.get(t, set())}
            by_id = list(image.tags) if ctx.is_admin else sorted(mine)
            asked = [normal_ref(ref)] if is_tag(ref) else by_id
            if not ctx.is_admin and (not asked or not set(asked) <= mine):
                raise Forbidden(
                    "a shared host image can only be deleted by a system admin", code="permission_denied"
                )
            # What leaves the engine: a tag another workspace still holds stays for them.
            leaving = [t for t in asked if ctx.is_admin or not held.get(t, set()) - {ctx.workspace_id}]
            s.execute(
                delete(ContainerImageClaim).where(
                    ContainerImageClaim.ref.in_(asked), ContainerImageClaim.workspace_id == ctx.workspace_id
                )
            )
            s.execute(delete(ContainerImageClaim).where(ContainerImageClaim.ref.in_(leaving)))
            whole = set(image.tags) <= set(leaving)  # its last tags go: the image goes with them
            if whole:
                self._check_removable(ctx, image, force)
            with self._tags.hold(leaving):
                if whole and not is_tag(ref):
                    self.driver.remove_image(image.id, force=force)
                    return
                for tag in leaving:
                    self.driver.remove_image(tag, force=force)

    def _check_removable(self, ctx: RequestContext, image: ContainerImage, force: bool) -> None:
        """Refuse to remove an image that containers use: another workspace's or anyone else's
        always (system admins excepted), the caller's own unless ``force``."""
        users = self.driver.image_users(image.id)
        foreign = [u for u in users if u != ctx.workspace_id]
        if foreign and not ctx.is_admin:
            raise InUse(
                f"image {image.id[7:19]} is used by {len(foreign)} container(s) of other workspaces "
                "or of the host",
                code="image_in_use",
            )
        if users and not force:
            raise InUse(f"image {image.id[7:19]} is used by {len(users)} container(s)", code="image_in_use")

    def prune(self, ctx: RequestContext) -> dict[str, Any]:
        """Remove dangling images engine-wide (system admins)."""
        ctx.require_admin("prune images: pruning affects every workspace")
        removed, reclaimed = self.driver.prune_images()
        return {"removed": removed, "space_reclaimed": reclaimed}

    def search(self, term: str, limit: int = 25) -> list[Any]:
        if not SEARCH_TERM.fullmatch(term):
            raise Invalid(f"invalid search term {term[:60]!r}", code="invalid_search")
        return self.driver.search_images(term, limit)

    def _host_tags(self, ctx: RequestContext, tags: list[str], *, may_take_host: bool) -> set[str]:
        """Check that the workspace may take ``tags``: none held by another workspace (409
        ``tag_taken``), and a host tag (on the engine, claimed by no one) only where
        ``may_take_host``. Returns the host tags among them, which stay the host's."""
        with self.sessions() as s:
            held = claims(s, tags)
        host: set[str] = set()
        for tag in tags:
            if held.get(tag, set()) - {ctx.workspace_id}:
                raise _taken(tag)
            if not held.get(tag) and self._exists(tag):
                if not may_take_host:
                    raise Conflict(
                        f"tag {tag!r} names an image shared by every workspace; pick another",
                        code="tag_taken",
                    )
                host.add(tag)
        return host

    def _exists(self, ref: str) -> bool:
        try:
            self.driver.image(ref)
        except NotFound:
            return False
        return True

    def _claim(self, ctx: RequestContext, refs: list[str]) -> None:
        """Record the tags as the workspace's (after the pull or build that made them); a tag
        another workspace took meanwhile is refused (409)."""
        with transaction(self.sessions) as s:
            held = claims(s, refs)
            for ref in refs:
                if held.get(ref, set()) - {ctx.workspace_id}:
                    raise _taken(ref)
                if ctx.workspace_id not in held.get(ref, set()):
                    try:
                        with s.begin_nested():
                            s.add(ContainerImageClaim(workspace_id=ctx.workspace_id, ref=ref))
                    except IntegrityError:
                        continue  # claimed concurrently by this same workspace

    def _unclaim(self, ctx: RequestContext, refs: list[str]) -> None:
        with transaction(self.sessions) as s:
            s.execute(
                delete(ContainerImageClaim).where(
                    ContainerImageClaim.ref.in_(list(refs)),
                    ContainerImageClaim.workspace_id == ctx.workspace_id,
                )
            )

    def _shown_json(self, ctx: RequestContext, image: ContainerImage) -> dict[str, Any]:
        with self.sessions() as s:
            return image_json(shown(image, ctx, claims(s, image.tags)))

    def pull(self, ctx: RequestContext, ref: str) -> str:
        """Start pulling ``ref`` into the workspace; returns the operation id. The tag becomes
        the workspace's once the pull succeeded (a host tag stays the host's, refreshed)."""
        check_image_ref(ref)
        tag = normal_ref(ref)
        self._host_tags(ctx, [tag], may_take_host=True)  # fail early; checked again when pulled
        with transaction(self.sessions) as s:
            op = self.ops.record(s, ctx, "image.pull", "container_image", None)
        log = self.logs.writer(op.id, ctx.workspace_id)

        def step(octx: OperationContext) -> dict[str, Any]:
            try:
                octx.progress(5, f"pulling {ref}")
                with self._tags.hold([tag]):
                    host = self._host_tags(ctx, [tag], may_take_host=True)
                    image = self.driver.pull_image(ref, log)
                    if not host:
                        self._claim(ctx, [tag])
            finally:
                log.close()
            return self._shown_json(ctx, image)

        self.ops.launch(op, step)
        return op.id

    def build(self, ctx: RequestContext, context_dir: Path, tags: list[str], project: str) -> str:
        """Build an image from a project folder; the operation's log is the build output and its
        result the image id and tags. A failing step fails the operation with that step named.
        The image is built untagged, then its tags are claimed and only then put on it, so a
        build never moves a tag it may not have."""
        normal = list(dict.fromkeys(normal_ref(check_image_ref(t)) for t in tags))
        self._host_tags(ctx, normal, may_take_host=ctx.is_admin)
        with transaction(self.sessions) as s:
            op = self.ops.record(s, ctx, "image.build", "project", None)
            op.message = f"building {project}"
        log = self.logs.writer(op.id, ctx.workspace_id)

        def step(octx: OperationContext) -> dict[str, Any]:
            try:
                octx.progress(5, f"building {', '.join(tags) or project}")
                try:
                    built = self.driver.build_image(context_dir, [], log)
                except BuildFailed as err:
                    raise BuildError(
                        f"step {err.step!r} failed: {err.message}" if err.step else err.message,
                        step=err.step,
                        output=err.output,
                    ) from None
                with self._tags.hold(normal):
                    host = self._host_tags(ctx, normal, may_take_host=ctx.is_admin)
                    mine = [t for t in normal if t not in host]
                    self._claim(ctx, mine)
                    octx.on_undo("forget the tags", functools.partial(self._unclaim, ctx, mine))
                    for tag in normal:
                        self.driver.tag_image(built.id, tag)
                        log(f"Successfully tagged {tag}")  # what the engine says of a tagged build
            finally:
                log.close()
            return {**self._shown_json(ctx, self.driver.image(built.id)), "project": project}

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
