"""Image calls: list, pull with progress, registry search, remove, prune and build with a live log."""

from __future__ import annotations

import collections
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker.errors
import requests.exceptions
from docker.api import APIClient
from docker.utils import parse_repository_tag

from cloudlet.drivers.containers import BuildFailed, ContainerImage, ProgressCallback, RegistryImage
from cloudlet.drivers.docker.errors import docker_errors, registry_error, translate
from cloudlet.errors import Invalid, NotFound

_BUILD_OUTPUT_LINES = 40  # lines of a failing step kept for the error report


def to_image(raw: dict[str, Any], in_use: int = 0) -> ContainerImage:
    tags = tuple(t for t in (raw.get("RepoTags") or []) if t != "<none>:<none>")
    created = raw.get("Created")
    if isinstance(created, str):  # inspect gives RFC 3339, list gives epoch seconds
        when = datetime.fromisoformat(created[:26].rstrip("Z") + "+00:00") if created else datetime.now(UTC)
    else:
        when = datetime.fromtimestamp(int(created or 0), UTC)
    return ContainerImage(
        id=str(raw["Id"]),
        tags=tags,
        size=int(raw.get("Size") or 0),
        created=when,
        in_use=in_use,
        labels=dict((raw.get("Config") or {}).get("Labels") or raw.get("Labels") or {}),
    )


def list_images(api: APIClient) -> list[ContainerImage]:
    with docker_errors("listing images"):
        raws = api.images()
        users = collections.Counter(c.get("ImageID") for c in api.containers(all=True))
    images = [to_image(r, users.get(r["Id"], 0)) for r in raws]
    return sorted(images, key=lambda i: i.created, reverse=True)


def get_image(api: APIClient, ref: str) -> ContainerImage:
    try:
        with docker_errors(f"image {ref}"):
            raw = api.inspect_image(ref)
    except Invalid:  # the engine's "no such image" (create reports it as 422 unknown_image)
        raise NotFound(f"no such image: {ref}", code="backend_not_found") from None
    return to_image(raw)


def pull_image(api: APIClient, ref: str, progress: ProgressCallback) -> ContainerImage:
    repository, tag = parse_repository_tag(ref)
    tag = tag or "latest"
    what = f"pulling {repository}:{tag}"
    try:
        for event in api.pull(repository, tag=tag, stream=True, decode=True):
            if "error" in event:
                raise docker.errors.APIError(str(event["error"]), explanation=str(event["error"]))
            line = " ".join(str(event[k]) for k in ("id", "status", "progress") if event.get(k))
            if line:
                progress(line)
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as err:
        raise registry_error(err, what) from err
    return get_image(api, f"{repository}:{tag}")


def search_images(api: APIClient, term: str, limit: int) -> list[RegistryImage]:
    try:
        raws = api.search(term, limit=limit)
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as err:
        raise registry_error(err, f"searching the registry for {term!r}") from err
    return [
        RegistryImage(
            name=str(r.get("name", "")),
            description=str(r.get("description") or ""),
            stars=int(r.get("star_count") or 0),
            official=bool(r.get("is_official")),
        )
        for r in raws
    ]


def tag_image(api: APIClient, image_id: str, ref: str) -> None:
    repository, tag = parse_repository_tag(ref)
    with docker_errors(f"tagging image {ref}"):
        api.tag(image_id, repository, tag or "latest", force=True)


def remove_image(api: APIClient, ref: str, force: bool) -> None:
    with docker_errors(f"removing image {ref}"):
        api.remove_image(ref, force=force)


def prune_images(api: APIClient) -> tuple[list[str], int]:
    with docker_errors("pruning images"):
        result = api.prune_images(filters={"dangling": True})
    removed = [
        str(entry.get("Deleted") or entry.get("Untagged"))
        for entry in result.get("ImagesDeleted") or []
        if entry.get("Deleted")
    ]
    return removed, int(result.get("SpaceReclaimed") or 0)


def build_image(
    api: APIClient,
    context: Path,
    tags: list[str],
    log: ProgressCallback,
    dockerfile: str,
    labels: dict[str, str],
) -> ContainerImage:
    """Classic builder output: "Step i/n : INSTRUCTION" lines, then the step's output."""
    step: str | None = None
    recent: collections.deque[str] = collections.deque(maxlen=_BUILD_OUTPUT_LINES)
    image_id: str | None = None
    try:
        stream = api.build(
            path=str(context),
            tag=tags[0] if tags else None,
            dockerfile=dockerfile,
            rm=True,
            forcerm=True,
            decode=True,
            labels=labels,
        )
        for event in stream:
            if "error" in event:
                message = str(event["error"]).strip()
                log(message)
                recent.append(message)
                raise BuildFailed(message, step, "\n".join(recent))
            if "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
                image_id = str(event["aux"]["ID"])
            text = str(event.get("stream") or event.get("status") or "")
            for line in text.splitlines():
                if not line.strip():
                    continue
                log(line)
                if line.startswith("Step "):
                    step = line.partition(" : ")[2] or line
                    recent.clear()
                recent.append(line)
        if image_id is None:
            raise BuildFailed("the build ended without an image", step, "\n".join(recent))
        with docker_errors("tagging the built image"):
            for extra in tags[1:]:
                repository, tag = parse_repository_tag(extra)
                api.tag(image_id, repository, tag or "latest")
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as err:
        raise translate(err, "building the image") from err
    return get_image(api, image_id)
