"""Users, sign-in, tokens, roles, isolation between workspaces, quotas and the audit log, on the
simulated drivers (the permission and tenancy logic is all in the services)."""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from datetime import timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import select, update

from cloudlet.db.models import (
    ApiToken,
    Instance,
    IPAllocation,
    Network,
    Snapshot,
    Volume,
    Workspace,
    utcnow,
)
from cloudlet.db.session import transaction
from cloudlet.services import users
from cloudlet.services.context import RequestContext
from cloudlet.services.instances import CreateRequest
from cloudlet.services.quotas import QuotaExceeded
from tests.unit.conftest import SimCloud

PASSWORD = "correct horse battery"


def bearer(token: str, workspace: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if workspace:
        headers["X-Cloudlet-Workspace"] = workspace
    return headers


def make_user(sim: SimCloud, name: str, *, admin: bool = False) -> None:
    with transaction(sim.cloud.db.sessions) as s:
        users.create_user(s, name, PASSWORD, is_admin=admin)


def login(sim: SimCloud, name: str, password: str = PASSWORD) -> dict[str, Any]:
    resp = sim.client.post("/api/v1/auth/login", json={"username": name, "password": password})
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def add_member(sim: SimCloud, username: str, role: str, workspace: str = "default") -> None:
    resp = sim.post(f"/api/v1/workspaces/{workspace}/members", json={"username": username, "role": role})
    assert resp.status_code == 201, resp.text


def token_for(sim: SimCloud, user_token: str, role: str, workspace: str = "default", **extra: Any) -> str:
    resp = sim.client.post(
        "/api/v1/tokens", json={"name": f"t-{role}", "role": role, "workspace": workspace, **extra},
        headers=bearer(user_token),
    )  # fmt: skip
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]  # type: ignore[no-any-return]


def test_password_sign_in_me_and_same_error_for_unknown_users(sim: SimCloud) -> None:
    make_user(sim, "alice")
    add_member(sim, "alice", "operator")
    pair = login(sim, "alice")
    me = sim.client.get("/api/v1/auth/me", headers=bearer(pair["access_token"])).json()
    assert me["username"] == "alice" and me["role"] == "operator" and "instance:create" in me["permissions"]
    assert [w["workspace"] for w in me["workspaces"]] == ["default"]
    wrong = sim.client.post("/api/v1/auth/login", json={"username": "alice", "password": "nope nope nope"})
    unknown = sim.client.post("/api/v1/auth/login", json={"username": "nobody", "password": "nope nope nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert {k: v for k, v in wrong.json().items() if k != "instance"} == {
        k: v for k, v in unknown.json().items() if k != "instance"
    }


def test_failed_sign_ins_are_paused(sim: SimCloud) -> None:
    make_user(sim, "bruteforced")
    for _ in range(sim.cloud.settings.login_attempts):
        r = sim.client.post(
            "/api/v1/auth/login", json={"username": "bruteforced", "password": "guess guess 1"}
        )
        assert r.status_code == 401
    blocked = sim.client.post("/api/v1/auth/login", json={"username": "bruteforced", "password": PASSWORD})
    assert blocked.status_code == 429 and blocked.json()["code"] == "too_many_attempts"
    assert int(blocked.headers["Retry-After"]) >= 1


def test_refresh_rotates_and_reuse_revokes_the_login(sim: SimCloud) -> None:
    make_user(sim, "carol")
    add_member(sim, "carol", "viewer")
    first = login(sim, "carol")
    second = sim.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert sim.client.get("/api/v1/instances", headers=bearer(second["access_token"])).status_code == 200
    reused = sim.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401 and reused.json()["code"] == "refresh_reused"
    # the thief's copy and the rightful holder's newer tokens are all dead now
    again = sim.client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert again.status_code == 401
    revoked = sim.client.get("/api/v1/instances", headers=bearer(second["access_token"]))
    assert revoked.status_code == 401 and revoked.json()["code"] == "token_revoked"


def test_logout_ends_the_access_token_at_once(sim: SimCloud) -> None:
    make_user(sim, "dave")
    add_member(sim, "dave", "viewer")
    pair = login(sim, "dave")
    assert sim.client.get("/api/v1/instances", headers=bearer(pair["access_token"])).status_code == 200
    sim.client.post("/api/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert sim.client.get("/api/v1/instances", headers=bearer(pair["access_token"])).status_code == 401


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_bad_access_tokens_are_401_never_500(sim: SimCloud) -> None:
    make_user(sim, "erin")
    add_member(sim, "erin", "viewer")
    pair = login(sim, "erin")
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    expired = jwt.encode(
        {**claims, "exp": utcnow() - timedelta(minutes=1)}, sim.cloud.jwt_key, algorithm="HS256"
    )
    foreign = jwt.encode(claims, "x" * 40, algorithm="HS256")
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'exp': claims['exp']})}."
    wrong_alg = jwt.encode(claims, sim.cloud.jwt_key, algorithm="HS512")
    for token, code in [
        ("not-a-jwt", "invalid_token"),
        ("a.b.c", "invalid_token"),
        (expired, "token_expired"),
        (foreign, "invalid_token"),
        (unsigned, "invalid_token"),
        (wrong_alg, "invalid_token"),
        ("x" * 10000, "invalid_token"),
    ]:
        resp = sim.client.get("/api/v1/instances", headers=bearer(token))
        assert resp.status_code == 401 and resp.json()["code"] == code, (token[:30], resp.text)
    huge = sim.client.post("/api/v1/auth/login", json={"username": "erin", "password": "p" * 5000})
    assert huge.status_code == 422
    junk = sim.client.post(
        "/api/v1/auth/login", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert junk.status_code == 422


def test_roles_limit_what_members_do(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    assert create_vm("web1").json()["status"] == "succeeded"
    make_user(sim, "viewer1")
    make_user(sim, "operator1")
    add_member(sim, "viewer1", "viewer")
    add_member(sim, "operator1", "operator")
    viewer = bearer(login(sim, "viewer1")["access_token"])
    operator = bearer(login(sim, "operator1")["access_token"])
    assert sim.client.get("/api/v1/instances/web1", headers=viewer).status_code == 200
    stop = sim.client.post("/api/v1/instances/web1/actions/stop", headers=viewer)
    assert stop.status_code == 403 and stop.json()["code"] == "permission_denied"
    assert (
        sim.client.post(
            "/api/v1/instances/web1/actions/stop", headers=operator, params={"wait": 5}
        ).status_code
        == 200
    )
    add = sim.client.post(
        "/api/v1/workspaces/default/members", json={"username": "viewer1", "role": "admin"}, headers=operator
    )
    assert add.status_code == 403
    # a custom role from the permission grid
    made = sim.post(
        "/api/v1/workspaces/default/roles",
        json={"name": "starter", "permissions": ["instance:view", "instance:edit"]},
    )
    assert made.status_code == 201, made.text
    bad = sim.post("/api/v1/workspaces/default/roles", json={"name": "odd", "permissions": ["instance:fly"]})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_permission"


def test_api_tokens_are_scoped_revocable_and_expire(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    assert create_vm("web1").json()["status"] == "succeeded"
    make_user(sim, "frank")
    add_member(sim, "frank", "operator")
    user_token = login(sim, "frank")["access_token"]
    viewer_token = token_for(sim, user_token, "viewer")
    assert sim.client.get("/api/v1/instances", headers=bearer(viewer_token)).status_code == 200
    assert (
        sim.client.post("/api/v1/instances/web1/actions/stop", headers=bearer(viewer_token)).status_code
        == 403
    )
    too_much = sim.client.post(
        "/api/v1/tokens", json={"name": "x", "role": "owner"}, headers=bearer(user_token)
    )
    assert too_much.status_code == 403
    listed = sim.client.get("/api/v1/tokens", headers=bearer(user_token)).json()
    assert [t["name"] for t in listed] == ["t-viewer"] and "token" not in listed[0]
    assert (
        sim.client.delete(f"/api/v1/tokens/{listed[0]['id']}", headers=bearer(user_token)).status_code == 204
    )
    assert sim.client.get("/api/v1/instances", headers=bearer(viewer_token)).status_code == 401

    expiring = token_for(sim, user_token, "viewer")
    with transaction(sim.cloud.db.sessions) as s:
        s.execute(
            update(ApiToken)
            .where(ApiToken.revoked_at.is_(None), ApiToken.name == "t-viewer")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    resp = sim.client.get("/api/v1/instances", headers=bearer(expiring))
    assert resp.status_code == 401 and resp.json()["code"] == "token_expired"

    # removing the member kills the member's tokens at once; so does disabling the user
    live = token_for(sim, user_token, "viewer")
    assert sim.delete("/api/v1/workspaces/default/members/frank").status_code == 204
    assert sim.client.get("/api/v1/instances", headers=bearer(live)).status_code == 401


def test_disabled_users_are_out_at_once(sim: SimCloud) -> None:
    make_user(sim, "gina")
    add_member(sim, "gina", "viewer")
    access = login(sim, "gina")["access_token"]
    assert (
        sim.client.patch("/api/v1/users/gina", json={"disabled": True}, headers=sim.headers).status_code
        == 200
    )
    assert sim.client.get("/api/v1/instances", headers=bearer(access)).status_code == 401
    assert (
        sim.client.post("/api/v1/auth/login", json={"username": "gina", "password": PASSWORD}).status_code
        == 401
    )


def _fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::path)?\}", lambda m: values.get(m.group(1), "x"), template)


def test_another_workspace_can_neither_read_nor_change_anything(sim: SimCloud, create_vm, image: str) -> None:  # type: ignore[no-untyped-def]
    """Walk every route of the OpenAPI document as a member of another workspace, aiming at the
    default workspace's resources: nothing of them is shown, nothing changes."""
    assert create_vm("secret-vm").json()["status"] == "succeeded"
    assert (
        sim.post(
            "/api/v1/networks", json={"name": "secret-net", "cidr": "10.93.0.0/24"}, params={"wait": 5}
        ).status_code
        == 200
    )
    sim.post("/api/v1/projects", json={"name": "secret-proj", "dockerfile": "FROM x\n"})
    made = sim.post("/api/v1/volumes", json={"name": "secret-vol", "size": 1}, params={"wait": 5})
    vol_id = made.json()["result"]["volume_id"]
    attached = sim.post(
        "/api/v1/instances/secret-vm/volumes", json={"volume": "secret-vol"}, params={"wait": 5}
    )
    assert attached.json()["status"] == "succeeded", attached.text
    made = sim.post("/api/v1/instances/secret-vm/snapshots", json={"name": "secret-snap"}, params={"wait": 5})
    snap_id = made.json()["result"]["snapshot_id"]
    with sim.cloud.db.reads() as s:
        vm = s.scalar(select(Instance).where(Instance.name == "secret-vm"))
        net = s.scalar(select(Network).where(Network.name == "secret-net"))
        default_ws = s.scalar(select(Workspace).where(Workspace.name == "default"))
        assert vm and net and default_ws
        ops = [o for o in sim.get("/api/v1/operations").json()["items"]]
        secrets_ = {vm.id, net.id, vm.name, net.name, "secret-proj", image, default_ws.id, ops[0]["id"]}
        image_id = sim.get(f"/api/v1/images/{image}").json()["id"]
        secrets_ |= {image_id, snap_id, "secret-snap", vol_id, "secret-vol"}
    make_user(sim, "mallory")
    mallory = login(sim, "mallory")["access_token"]
    assert (
        sim.client.post("/api/v1/workspaces", json={"name": "team-m"}, headers=bearer(mallory)).status_code
        == 201
    )
    mallory_token = token_for(sim, mallory, "owner", workspace="team-m")

    def snapshot() -> list[Any]:
        with sim.cloud.db.reads() as s:
            rows = s.execute(
                select(Instance.id, Instance.state, Instance.name).where(
                    Instance.workspace_id == default_ws.id
                )
            ).all()
            nets = s.execute(
                select(Network.id, Network.status).where(Network.workspace_id == default_ws.id)
            ).all()
            allocs = s.execute(select(IPAllocation.address)).all()
            snaps = s.execute(select(Snapshot.id, Snapshot.status)).all()
            vols = s.execute(
                select(Volume.id, Volume.status, Volume.size_gb, Volume.instance_id).where(
                    Volume.workspace_id == default_ws.id
                )
            ).all()
            return [sorted(rows), sorted(nets), sorted(allocs), sorted(snaps), sorted(vols)]

    before = snapshot()
    values_list = [
        {
            "ref": vm.id,
            "snapshot": snap_id,
            "volume": vol_id,
            "name": "secret-proj",
            "op_id": ops[0]["id"],
            "action": "stop",
            "path": "Dockerfile",
            "username": "admin",
            "role": "owner",
        },
        {
            "ref": vm.name,
            "snapshot": "secret-snap",
            "volume": "secret-vol",
            "name": "secret-proj",
            "op_id": ops[0]["id"],
            "action": "start",
            "path": "Dockerfile",
            "username": "admin",
            "role": "viewer",
        },
        {
            "ref": net.id,
            "name": "secret-net",
            "op_id": ops[0]["id"],
            "action": "reboot",
            "path": "x",
            "username": "admin",
            "role": "admin",
        },
        {
            "ref": image_id,
            "name": image,
            "op_id": ops[0]["id"],
            "action": "kill",
            "path": "x",
            "username": "mallory",
            "role": "owner",
        },
        {
            "ref": "default",
            "name": "default",
            "op_id": ops[0]["id"],
            "action": "pause",
            "path": "x",
            "username": "admin",
            "role": "owner",
        },
    ]
    document = sim.get("/openapi.json").json()
    checked = 0
    body: dict[str, Any] = {
        "name": "pwn",
        "username": "mallory",
        "role": "owner",
        "image": image,
        "kind": "vm",
        "cidr": "10.94.0.0/24",
        "source_path": "/etc/passwd",
        "tags": ["pwn:1"],
        "command": ["true"],
        "permissions": ["instance:view"],
        "volume": "secret-vol",  # her attaches name our volume (the id stays checked for leaks)
        "size": 1,
    }
    for who in (bearer(mallory), bearer(mallory_token), bearer(mallory, "team-m")):
        for template, methods in document["paths"].items():
            if not template.startswith("/api/v1") or template.startswith("/api/v1/auth/"):
                continue
            for method in methods:
                for values in values_list:
                    path = _fill(template, values)
                    resp = sim.client.request(
                        method.upper(), path, headers=who, json=body, params={"wait": 2}
                    )
                    checked += 1
                    assert resp.status_code < 500, (method, path, resp.text)
                    text = resp.text
                    if path.startswith("/api/v1/audit") and resp.status_code == 200:
                        # her own log echoes the paths she tried; it must hold nothing of others
                        entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
                        entries = entries or (resp.json() if text.startswith("[") else [])
                        assert all(
                            e["workspace_id"] != default_ws.id and e["principal"] == "mallory"
                            for e in entries
                        )
                        continue
                    leaked = [
                        x
                        for x in secrets_
                        if x in text and not (path.endswith(x) and resp.status_code >= 400)
                    ]
                    leaked = (
                        [
                            x
                            for x in leaked
                            if x not in resp.json().get("instance", "")
                            and x not in resp.json().get("detail", "")
                        ]
                        if resp.headers.get("content-type", "").startswith("application/problem")
                        else leaked
                    )
                    sent = json.dumps(body)  # her own input may be echoed back (e.g. a failed pull's ref)
                    leaked = [x for x in leaked if x not in sent]
                    assert not leaked, (method, path, resp.status_code, leaked, text[:300])
    assert checked > 300
    assert snapshot() == before
    with sim.cloud.db.reads() as s:
        # mallory's own creates landed in team-m, never in default
        assert (
            s.scalar(select(Instance).where(Instance.workspace_id == default_ws.id, Instance.name == "pwn"))
            is None
        )
        assert (
            s.scalar(select(Network).where(Network.workspace_id == default_ws.id, Network.name == "pwn"))
            is None
        )


def test_concurrent_creates_never_pass_the_quota(sim: SimCloud, image: str) -> None:
    resp = sim.client.put("/api/v1/workspaces/default/quota", json={"instances": 5}, headers=sim.headers)
    assert resp.status_code == 200 and resp.json()["limits"]["instances"] == 5
    with sim.cloud.db.reads() as s:
        ws = s.scalar(select(Workspace.id).where(Workspace.name == "default"))
    ctx = RequestContext(principal="test", workspace_id=str(ws))
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def create(i: int) -> None:
        barrier.wait()
        try:
            sim.cloud.instances.create(ctx, CreateRequest(name=f"q{i}", image=image, memory=64))
            result = "created"
        except QuotaExceeded:
            result = "quota"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] * 5 + ["quota"] * 15
    usage = sim.get("/api/v1/workspaces/default/quota").json()
    assert usage["usage"]["instances"] == 5
    refused = sim.post("/api/v1/instances", json={"name": "one-more", "image": image, "memory": 64})
    assert refused.status_code == 409 and refused.json()["code"] == "quota_exceeded"


def test_audit_records_who_did_what(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    create_vm("audited")
    sim.post("/api/v1/instances/audited/actions/reboot", params={"wait": 5})
    sim.post("/api/v1/instances/nothing/actions/stop")
    rows = sim.get("/api/v1/audit").json()
    actions = [(r["action"], r["target"], r["result"], r["principal"]) for r in rows]
    assert ("instance_action", "ref=audited action=reboot", "ok", "admin") in actions
    assert ("instance_action", "ref=nothing action=stop", "refused", "admin") in actions
    assert all(r["source"] for r in rows)
    lines = sim.get("/api/v1/audit/export").text.splitlines()
    assert len(lines) >= 3 and json.loads(lines[0])["at"] <= json.loads(lines[-1])["at"]
    make_user(sim, "vic")
    add_member(sim, "vic", "viewer")
    assert (
        sim.client.get("/api/v1/audit", headers=bearer(login(sim, "vic")["access_token"])).status_code == 403
    )


def test_events_reach_only_their_workspace(sim: SimCloud, create_vm) -> None:  # type: ignore[no-untyped-def]
    make_user(sim, "otto")
    otto = login(sim, "otto")["access_token"]
    assert (
        sim.client.post("/api/v1/workspaces", json={"name": "team-o"}, headers=bearer(otto)).status_code
        == 201
    )
    with sim.client.websocket_connect("/api/v1/events?workspace=team-o", headers=bearer(otto)) as ws:
        assert create_vm("noisy").json()["status"] == "succeeded"  # the default workspace: many events
        mine = {"name": "onet", "cidr": "10.96.0.0/24"}
        made = sim.client.post(
            "/api/v1/networks", json=mine, headers=bearer(otto, "team-o"), params={"wait": 5}
        )
        assert made.status_code == 200
        first = ws.receive_json()
        # the first event otto sees is his own network's operation: none of the VM's came through
        assert first["type"] == "operation.updated" and first["data"]["kind"] == "network.create", first


def test_weak_jwt_secrets_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cloudlet.config import Settings
    from cloudlet.drivers.sim import SimDriver
    from cloudlet.services.cloud import Cloud
    from cloudlet.services.logins import WeakSecret

    for weak in ("changeme", "short-secret", "secret"):
        driver = SimDriver()
        with pytest.raises(WeakSecret):
            Cloud.build(
                Settings(
                    data_dir=tmp_path / uuid.uuid4().hex,
                    jwt_secret=weak,
                    vm_driver="sim",
                    container_driver="none",
                ),
                backend=(driver, driver),
            )


def test_published_images_serve_every_workspace(sim: SimCloud, image: str) -> None:
    make_user(sim, "pia")
    pia = login(sim, "pia")["access_token"]
    assert (
        sim.client.post("/api/v1/workspaces", json={"name": "team-p"}, headers=bearer(pia)).status_code == 201
    )
    mine = bearer(pia, "team-p")
    net = {"name": "pnet", "cidr": "10.95.0.0/24"}
    assert sim.client.post("/api/v1/networks", json=net, headers=mine, params={"wait": 5}).status_code == 200
    vm = {"name": "p1", "image": image, "memory": 64, "network": "pnet"}
    before = sim.client.post("/api/v1/instances", json=vm, headers=mine)
    assert before.status_code == 422 and before.json()["code"] == "unknown_image"
    not_admin = sim.client.patch(f"/api/v1/images/{image}", json={"public": True}, headers=mine)
    assert not_admin.status_code == 403  # refused before any look-up: it tells nothing of the image
    assert sim.client.patch(f"/api/v1/images/{image}", json={"public": True}, headers=sim.headers).json()[
        "public"
    ]
    assert [i["name"] for i in sim.client.get("/api/v1/images", headers=mine).json()] == [image]
    made = sim.client.post("/api/v1/instances", json=vm, headers=mine, params={"wait": 10})
    assert made.status_code == 200 and made.json()["status"] == "succeeded", made.text
    assert sim.client.delete(f"/api/v1/images/{image}", headers=mine).status_code == 404
    sim.client.patch(f"/api/v1/images/{image}", json={"public": False}, headers=sim.headers)
    assert sim.client.get("/api/v1/images", headers=mine).json() == []


def test_container_image_tags_belong_to_their_workspace(sim: SimCloud) -> None:
    from cloudlet.db.models import ContainerImageClaim

    sim.containers.add_image("team:1")
    with transaction(sim.cloud.db.sessions) as s:
        default = s.scalar(select(Workspace.id).where(Workspace.name == "default"))
        s.add(ContainerImageClaim(workspace_id=default, ref="team:1"))
    make_user(sim, "rita")
    rita = login(sim, "rita")["access_token"]
    assert (
        sim.client.post("/api/v1/workspaces", json={"name": "team-r"}, headers=bearer(rita)).status_code
        == 201
    )
    hers = bearer(rita, "team-r")
    sim.client.post(
        "/api/v1/networks", json={"name": "rnet", "cidr": "10.97.0.0/24"}, headers=hers, params={"wait": 5}
    )
    seen = [i["tags"] for i in sim.client.get("/api/v1/container-images", headers=hers).json()]
    assert seen == [["local/busybox:latest"]]  # the host's shared image, not the other team's tag
    assert sim.client.get("/api/v1/container-images/team:1", headers=hers).status_code == 404
    run = {"kind": "container", "name": "c1", "image": "team:1", "network": "rnet"}
    refused = sim.client.post("/api/v1/instances", json=run, headers=hers)
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_image"
    taken = sim.client.post("/api/v1/container-images/pull", json={"image": "team:1"}, headers=hers)
    assert taken.status_code == 409 and taken.json()["code"] == "tag_taken"
    shared = sim.client.delete("/api/v1/container-images/local/busybox:latest", headers=hers)
    assert shared.status_code == 403
    ok = sim.client.post(
        "/api/v1/instances", json={**run, "image": "local/busybox:latest"}, headers=hers, params={"wait": 5}
    )
    assert ok.json()["status"] == "succeeded"
    assert [i["tags"] for i in sim.get("/api/v1/container-images").json()].count(["team:1"]) == 1


def test_sign_up_only_when_allowed(sim: SimCloud, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.conftest import sim_cloud

    body = {"username": "newbie", "password": PASSWORD}
    refused = sim.client.post("/api/v1/auth/signup", json=body)
    assert refused.status_code == 403 and refused.json()["code"] == "signup_disabled"
    with sim_cloud(tmp_path / "open", allow_signup=True) as open_sim:
        made = open_sim.client.post("/api/v1/auth/signup", json=body)
        assert made.status_code == 201
        me = open_sim.client.get("/api/v1/auth/me", headers=bearer(made.json()["access_token"])).json()
        assert me["username"] == "newbie" and me["workspaces"] == [] and me["permissions"] == []
        weak = open_sim.client.post("/api/v1/auth/signup", json={"username": "weakling", "password": "short"})
        assert weak.status_code == 422 and weak.json()["code"] == "weak_password"


def test_changing_a_password(sim: SimCloud) -> None:
    make_user(sim, "hank")
    access = login(sim, "hank")["access_token"]
    bad = {"current_password": "not it at all", "new_password": "another long one"}
    wrong = sim.client.post("/api/v1/auth/password", json=bad, headers=bearer(access))
    assert wrong.status_code == 401
    good = {"current_password": PASSWORD, "new_password": "another long one"}
    ok = sim.client.post("/api/v1/auth/password", json=good, headers=bearer(access))
    assert ok.status_code == 200 and ok.json()["access_token"]  # a fresh sign-in
    assert (
        sim.client.post("/api/v1/auth/login", json={"username": "hank", "password": PASSWORD}).status_code
        == 401
    )
    assert login(sim, "hank", "another long one")["access_token"]


def test_cors_only_for_configured_origins(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.conftest import sim_cloud

    with sim_cloud(tmp_path, cors_origins=["https://panel.example"]) as sim:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        allowed = sim.client.options(
            "/api/v1/instances", headers={"Origin": "https://panel.example", **preflight}
        )
        assert allowed.headers.get("access-control-allow-origin") == "https://panel.example"
        other = sim.client.options(
            "/api/v1/instances", headers={"Origin": "https://evil.example", **preflight}
        )
        assert "access-control-allow-origin" not in other.headers


def test_foundation_tokens_move_into_the_user_model(sim: SimCloud) -> None:
    """A token made by the foundation release (no user, role 'admin') keeps working as the
    bootstrap admin's owner token once the server upgrades."""
    from cloudlet.services.auth import bootstrap, hash_token

    legacy = "clt_" + "l" * 43
    with transaction(sim.cloud.db.sessions) as s:
        s.add(ApiToken(name="old", token_hash=hash_token(legacy), prefix=legacy[:10], role="admin"))
    with transaction(sim.cloud.db.sessions) as s:
        assert bootstrap(s) is None
        row = s.scalar(select(ApiToken).where(ApiToken.name == "old"))
        assert row is not None and row.user_id and row.role == "owner" and row.workspace_id
    assert sim.client.get("/api/v1/instances", headers=bearer(legacy)).status_code == 200


def test_oversized_json_bodies_are_refused_unread(sim: SimCloud) -> None:
    huge = b'{"username": "x", "password": "' + b"p" * (2 * 1024 * 1024) + b'"}'
    resp = sim.client.post("/api/v1/auth/login", content=huge, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["code"] == "body_too_large"

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"name": "x", "cidr": "'
        for _ in range(40):
            yield b"9" * 65536
        yield b'"}'

    streamed = sim.client.post(
        "/api/v1/networks", content=chunks(), headers={**sim.headers, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
