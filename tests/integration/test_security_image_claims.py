"""Issue 13 on the real Docker engine: no workspace takes, hides or removes a container image
another uses. Before the fix, workspace B's failed pull of the host's ``local/busybox:latest``
(no registry here) left B holding the tag: A no longer saw the image nor could run it, and B's
``DELETE ...?force=true`` untagged it for the whole host while A's container used it."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from cloudlet.client import ApiError, Client, OperationFailed
from tests.integration.conftest import Server, next_subnet
from tests.integration.docker_images import BUSYBOX_REF

pytestmark = pytest.mark.integration
PASSWORD = "a long enough password"


@contextlib.contextmanager
def tenant(server: Server, name: str) -> Iterator[Client]:
    """A user who is no system admin, in a workspace of their own with a network; everything it
    made there is removed afterwards (the server fixture cleans only the default workspace)."""
    with server.client() as admin:
        admin.request("POST", "/users", json={"username": name, "password": PASSWORD})
    c = Client(server.url, timeout=60)
    c.login(name, PASSWORD)
    c.request("POST", "/workspaces", json={"name": f"ws-{name}"})
    c.workspace = f"ws-{name}"
    c.http.headers["X-Cloudlet-Workspace"] = c.workspace
    c.wait(c.request("POST", "/networks", json={"name": "net", "cidr": next_subnet()}), timeout=60)
    try:
        yield c
    finally:
        for vm in c.instances():
            with contextlib.suppress(ApiError, OperationFailed):
                c.delete_instance(vm["id"], force=True)
        with contextlib.suppress(ApiError, OperationFailed):
            c.delete_network("net")
        c.close()


def run(c: Client, name: str, image: str) -> str:
    """Run a container; its state once the create succeeded."""
    c.create_instance(kind="container", name=name, image=image, network="net", command=["sleep", "600"])
    return str(c.instance(name)["state"])


def build(c: Client, project: str, dockerfile: str, tag: str) -> dict[str, Any]:
    c.create_project(project, dockerfile=dockerfile)
    op = c.request("POST", f"/projects/{project}/build", json={"tags": [tag]})
    try:
        return c.wait(op, timeout=180)
    except OperationFailed as failed:
        return failed.operation


def tags(c: Client) -> list[str]:
    return [t for i in c.request("GET", "/container-images") for t in i["tags"]]


def test_a_failed_pull_takes_nothing_and_a_forced_delete_removes_nothing(sqlite_server, engine) -> None:  # type: ignore[no-untyped-def]
    with tenant(sqlite_server, "alice") as alice, tenant(sqlite_server, "bob") as bob:
        with pytest.raises(OperationFailed) as failed:
            bob.wait(bob.request("POST", "/container-images/pull", json={"image": BUSYBOX_REF}), timeout=60)
        assert failed.value.operation["error"]["code"] == "registry_unreachable"

        assert BUSYBOX_REF in tags(alice)
        assert run(alice, "web", BUSYBOX_REF) == "running"
        with pytest.raises(ApiError) as refused:
            bob.request("DELETE", f"/container-images/{BUSYBOX_REF}", params={"force": True})
        assert (refused.value.status, refused.value.code) == (403, "permission_denied")
        assert BUSYBOX_REF in engine.images.get(BUSYBOX_REF).tags
        assert BUSYBOX_REF in tags(alice)
        assert run(alice, "web2", BUSYBOX_REF) == "running"


def test_builds_take_no_shared_tag_and_an_image_in_use_stays(sqlite_server, engine) -> None:  # type: ignore[no-untyped-def]
    mine = f"local/bob-{secrets.token_hex(4)}:1"
    dockerfile = f"FROM {BUSYBOX_REF}\nRUN echo {secrets.token_hex(8)} > /marker\n"
    outsider = None
    with tenant(sqlite_server, "carol") as carol, tenant(sqlite_server, "dave") as dave:
        try:
            with pytest.raises(ApiError) as taken:  # the host's tag is everyone's: no build takes it
                dave.request("POST", "/projects", json={"name": "over", "dockerfile": dockerfile})
                dave.request("POST", "/projects/over/build", json={"tags": [BUSYBOX_REF]})
            assert (taken.value.status, taken.value.code) == (409, "tag_taken")

            failing = build(dave, "broken", f"FROM {BUSYBOX_REF}\nRUN false\n", mine)
            assert failing["status"] == "failed"
            assert mine not in tags(dave)  # a failed build claimed nothing: carol could take it

            assert build(dave, "app", dockerfile, mine)["status"] == "succeeded"
            assert mine in tags(dave) and mine not in tags(carol)
            with pytest.raises(ApiError) as theirs:
                carol.request("POST", "/projects", json={"name": "app", "dockerfile": dockerfile})
                carol.request("POST", "/projects/app/build", json={"tags": [mine]})
            assert (theirs.value.status, theirs.value.code) == (409, "tag_taken")

            # Someone on the host runs a container of dave's image outside cloudlet: dave may not
            # remove the image from under it, force or not (before the fix, force untagged it).
            outsider = engine.containers.create(mine, ["sleep", "600"])
            with pytest.raises(ApiError) as in_use:
                dave.request("DELETE", f"/container-images/{mine}", params={"force": True})
            assert (in_use.value.status, in_use.value.code) == (409, "image_in_use")
            assert mine in engine.images.get(mine).tags and mine in tags(dave)

            outsider.remove(force=True)
            outsider = None
            dave.request("DELETE", f"/container-images/{mine}")
            assert mine not in tags(dave)
        finally:
            if outsider is not None:
                outsider.remove(force=True)
            with contextlib.suppress(docker.errors.ImageNotFound):
                engine.images.remove(mine, force=True)
