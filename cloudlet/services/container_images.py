"""Container images on the engine: list and filter, pull (an operation with progress), registry
search, delete, prune, and builds from Dockerfile projects (an operation with a live log)."""

from __future__ import annotations

import re
from typing import Any

from cloudlet.db.session import SessionFactory, transaction
from cloudlet.drivers.containers import BuildFailed, ContainerDriver, ContainerImage
from cloudlet.errors import CloudletError, Invalid, NotFound
from cloudlet.services.containers import check_image_ref
from cloudlet.services.context import RequestContext
from cloudlet.services.operations import OperationContext, Operations
from cloudlet.services.oplogs import OperationLogs

SEARCH_TERM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


class BuildError(CloudletError):
    status, code, title = 422, "build_failed", "Image build failed"


class ContainerImages:
    def __init__(
        self, sessions: SessionFactory, ops: Operations, logs: OperationLogs, driver: ContainerDriver
    ) -> None:
        self.sessions = sessions
        self.ops = ops
        self.logs = logs
        self.driver = driver

    def local(self, contains: str | None = None) -> list[ContainerImage]:
        """Newest first; ``contains`` keeps images whose tag or id contains it."""
        images = self.driver.list_images()
        if contains:
            needle = contains.lower()
            images = [i for i in images if needle in i.id.lower() or any(needle in t.lower() for t in i.tags)]
        return images

    def get(self, ref: str) -> ContainerImage:
        check_ref(ref)
        try:
            return self.driver.image(ref)
        except NotFound:
            raise NotFound(f"container image {ref!r} not found", code="image_not_found") from None

    def delete(self, ref: str, *, force: bool = False) -> None:
        image = self.get(ref)
        self.driver.remove_image(ref if ref in image.tags else image.id, force=force)

    def prune(self) -> dict[str, Any]:
        removed, reclaimed = self.driver.prune_images()
        return {"removed": removed, "space_reclaimed": reclaimed}

    def search(self, term: str, limit: int = 25) -> list[Any]:
        if not SEARCH_TERM.fullmatch(term):
            raise Invalid(f"invalid search term {term[:60]!r}", code="invalid_search")
        return self.driver.search_images(term, limit)

    def pull(self, ctx: RequestContext, ref: str) -> str:
        """Start pulling ``ref``; returns the operation id. The registry is asked first, so an
        unreachable registry is a 502 at once rather than a failed operation later."""
        check_image_ref(ref)
        with transaction(self.sessions) as s:
            op = self.ops.record(s, ctx, "image.pull", "container_image", None)
        log = self.logs.writer(op.id, ctx.workspace_id)

        def step(octx: OperationContext) -> dict[str, Any]:
            try:
                octx.progress(5, f"pulling {ref}")
                image = self.driver.pull_image(ref, log)
            finally:
                log.close()
            return image_json(image)

        self.ops.launch(op, step)
        return op.id

    def build(self, ctx: RequestContext, context_dir: Any, tags: list[str], project: str) -> str:
        """Build an image from a project folder; the operation's log is the build output and its
        result the image id and tags. A failing step fails the operation with that step named."""
        for tag in tags:
            check_image_ref(tag)
        with transaction(self.sessions) as s:
            op = self.ops.record(s, ctx, "image.build", "project", None)
            op.message = f"building {project}"
        log = self.logs.writer(op.id, ctx.workspace_id)

        def step(octx: OperationContext) -> dict[str, Any]:
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


def check_ref(ref: str) -> str:
    try:
        return check_image_ref(ref)
    except Invalid:
        raise NotFound(f"container image {ref[:80]!r} not found", code="image_not_found") from None


def image_json(image: ContainerImage) -> dict[str, Any]:
    return {
        "id": image.id,
        "tags": list(image.tags),
        "size": image.size,
        "created": image.created.isoformat(),
        "in_use": image.in_use,
    }
