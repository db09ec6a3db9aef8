"""Issue 13: one workspace took another's container image. Workspace B pulled the host's
``local/busybox:latest`` (the pull failed, no registry) and kept a claim on the tag, so A no longer
saw the image nor could run it, and B's forced delete removed it for the whole host while A's
container used it. Each test tries one way a workspace could take, hide or remove what another
uses; the same flows run on the real engine in tests/integration/test_security_image_claims.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cloudlet.db.models import ContainerImageClaim, Workspace
from cloudlet.db.session import transaction
from tests.unit.conftest import SimCloud
from tests.unit.test_tenancy import bearer, login, make_user

BUSYBOX = "local/busybox:latest"


def tenant(sim: SimCloud, name: str, cidr: str) -> dict[str, str]:
    """A non-admin user with a workspace of its own (and a network there): its headers."""
    make_user(sim, name)
    token = login(sim, name)["access_token"]
    made = sim.client.post("/api/v1/workspaces", json={"name": f"ws-{name}"}, headers=bearer(token))
    assert made.status_code == 201, made.text
    headers = bearer(token, f"ws-{name}")
    net = sim.client.post(
        "/api/v1/networks", json={"name": "net", "cidr": cidr}, headers=headers, params={"wait": 5}
    )
    assert net.json()["status"] == "succeeded", net.text
    return headers


def tags_seen(sim: SimCloud, headers: dict[str, str]) -> list[list[str]]:
    return [i["tags"] for i in sim.client.get("/api/v1/container-images", headers=headers).json()]


def run(sim: SimCloud, headers: dict[str, str], name: str, image: str) -> dict[str, Any]:
    body = {"kind": "container", "name": name, "image": image, "network": "net"}
    resp = sim.client.post("/api/v1/instances", json=body, headers=headers, params={"wait": 5})
    return resp.json()  # type: ignore[no-any-return]


def claim_rows(sim: SimCloud) -> list[tuple[str, str]]:
    with sim.cloud.db.reads() as s:
        rows = s.execute(
            select(ContainerImageClaim.ref, Workspace.name).join(
                Workspace, Workspace.id == ContainerImageClaim.workspace_id
            )
        )
        return sorted((ref, ws) for ref, ws in rows)


def test_a_failed_pull_claims_nothing_and_the_host_image_stays_everyones(sim: SimCloud) -> None:
    alice, bob = tenant(sim, "alice", "10.91.0.0/24"), tenant(sim, "bob", "10.92.0.0/24")
    pulled = sim.client.post(
        "/api/v1/container-images/pull", json={"image": BUSYBOX}, headers=bob, params={"wait": 5}
    ).json()
    assert pulled["status"] == "failed" and pulled["error"]["code"] == "registry_unreachable"
    assert claim_rows(sim) == []
    assert tags_seen(sim, alice) == [[BUSYBOX]]
    assert run(sim, alice, "web", BUSYBOX)["status"] == "succeeded"

    forced = sim.client.delete(f"/api/v1/container-images/{BUSYBOX}", headers=bob, params={"force": True})
    assert forced.status_code == 403 and forced.json()["code"] == "permission_denied"
    assert sim.containers.image(BUSYBOX).tags == (BUSYBOX,)
    assert run(sim, alice, "web2", BUSYBOX)["status"] == "succeeded"


def test_a_successful_pull_claims_its_tag_but_a_host_tag_stays_the_hosts(sim: SimCloud) -> None:
    alice, bob = tenant(sim, "alice", "10.91.0.0/24"), tenant(sim, "bob", "10.92.0.0/24")
    sim.containers.registry |= {"alpine:3", BUSYBOX}
    pull = {"headers": bob, "params": {"wait": 5}}
    assert (
        sim.client.post("/api/v1/container-images/pull", json={"image": "alpine:3"}, **pull).json()["status"]
        == "succeeded"
    )
    assert claim_rows(sim) == [("alpine:3", "ws-bob")]
    assert [BUSYBOX] in tags_seen(sim, alice) and ["alpine:3"] not in tags_seen(sim, alice)
    taken = sim.client.post("/api/v1/container-images/pull", json={"image": "alpine:3"}, headers=alice)
    assert taken.status_code == 409 and taken.json()["code"] == "tag_taken"

    refreshed = sim.client.post("/api/v1/container-images/pull", json={"image": BUSYBOX}, **pull).json()
    assert refreshed["status"] == "succeeded"
    assert claim_rows(sim) == [("alpine:3", "ws-bob")]  # the host's tag was refreshed, not taken
    assert [BUSYBOX] in tags_seen(sim, alice)


def test_one_more_tag_on_a_shared_image_hides_nothing_and_names_nothing(sim: SimCloud) -> None:
    """A build that changes nothing (or a pull of the same content) gives an image id the host
    already has: the other workspaces still see it, under the host's tag only."""
    alice, bob = tenant(sim, "alice", "10.91.0.0/24"), tenant(sim, "bob", "10.92.0.0/24")
    image_id = sim.containers.image(BUSYBOX).id
    sim.containers.tag_image(image_id, "bob/private:1")
    with transaction(sim.cloud.db.sessions) as s:
        ws = s.scalar(select(Workspace.id).where(Workspace.name == "ws-bob"))
        s.add(ContainerImageClaim(workspace_id=ws, ref="bob/private:1"))

    assert tags_seen(sim, alice) == [[BUSYBOX]]
    assert sorted(tags_seen(sim, bob)[0]) == sorted([BUSYBOX, "bob/private:1"])
    assert sim.client.get("/api/v1/container-images/bob/private:1", headers=alice).status_code == 404
    by_id = sim.client.get(f"/api/v1/container-images/{image_id}", headers=alice).json()
    assert by_id["tags"] == [BUSYBOX]
    refused = run(sim, alice, "web", "bob/private:1")
    assert refused["code"] == "unknown_image"
    assert run(sim, alice, "web", BUSYBOX)["status"] == "succeeded"


def test_an_image_another_workspace_runs_is_never_removed(sim: SimCloud) -> None:
    alice, bob = tenant(sim, "alice", "10.91.0.0/24"), tenant(sim, "bob", "10.92.0.0/24")
    image_id = sim.containers.add_image("local/base:1").id
    assert run(sim, alice, "web", "local/base:1")["status"] == "succeeded"
    # Bob holds a second tag of the same image; then the host's tag goes (an admin removes it).
    sim.containers.tag_image(image_id, "bob/app:1")
    with transaction(sim.cloud.db.sessions) as s:
        ws = s.scalar(select(Workspace.id).where(Workspace.name == "ws-bob"))
        s.add(ContainerImageClaim(workspace_id=ws, ref="bob/app:1"))
    assert sim.delete("/api/v1/container-images/local/base:1").status_code == 204

    for ref in ("bob/app:1", image_id):
        forced = sim.client.delete(f"/api/v1/container-images/{ref}", headers=bob, params={"force": True})
        assert forced.status_code == 409 and forced.json()["code"] == "image_in_use", forced.text
    assert sim.containers.image(image_id).tags == ("bob/app:1",)
    assert claim_rows(sim) == [("bob/app:1", "ws-bob")]  # the refused delete changed nothing

    # Once only Bob's own container uses it, force is his to use.
    sim.client.delete("/api/v1/instances/web", headers=alice, params={"wait": 5, "force": True})
    assert run(sim, bob, "mine", "bob/app:1")["status"] == "succeeded"
    plain = sim.client.delete("/api/v1/container-images/bob/app:1", headers=bob)
    assert plain.status_code == 409 and plain.json()["code"] == "image_in_use"
    forced = sim.client.delete("/api/v1/container-images/bob/app:1", headers=bob, params={"force": True})
    assert forced.status_code == 204, forced.text
    assert claim_rows(sim) == []


def test_a_tag_two_workspaces_hold_leaves_the_engine_only_with_the_last(sim: SimCloud) -> None:
    """Both hold ``shared:1`` (made before tags were per workspace): one workspace's delete drops
    only its own claim."""
    alice, bob = tenant(sim, "alice", "10.91.0.0/24"), tenant(sim, "bob", "10.92.0.0/24")
    sim.containers.add_image("shared:1")
    with transaction(sim.cloud.db.sessions) as s:
        for name in ("ws-alice", "ws-bob"):
            ws = s.scalar(select(Workspace.id).where(Workspace.name == name))
            s.add(ContainerImageClaim(workspace_id=ws, ref="shared:1"))
    assert sim.client.delete("/api/v1/container-images/shared:1", headers=bob).status_code == 204
    assert claim_rows(sim) == [("shared:1", "ws-alice")]
    assert ["shared:1"] in tags_seen(sim, alice)
    assert sim.client.delete("/api/v1/container-images/shared:1", headers=alice).status_code == 204
    assert claim_rows(sim) == [] and ["shared:1"] not in tags_seen(sim, alice)
