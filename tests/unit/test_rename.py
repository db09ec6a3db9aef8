"""Renaming instances: the name changes everywhere cloudlet keeps it (row, backend label, a pool
member's cache); id, address and hostname stay; refusals and backend failures change nothing."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from sqlalchemy import select, update

from cloudlet.db.models import Instance, Pool, PoolMember
from cloudlet.db.session import transaction
from tests.unit.conftest import SimCloud
from tests.unit.test_api_bad_input import assert_refused

CreateVm = Callable[..., httpx.Response]


def rename(sim: SimCloud, ref: str, name: str) -> httpx.Response:
    return sim.client.patch(f"/api/v1/instances/{ref}", json={"name": name}, headers=sim.headers)


def test_rename_keeps_id_address_and_hostname(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web")
    before = sim.get("/api/v1/instances/web").json()
    resp = rename(sim, "web", "frontend")
    assert resp.status_code == 200, resp.text
    after = resp.json()
    assert after["name"] == "frontend"
    assert (after["id"], after["ip"], after["hostname"]) == (before["id"], before["ip"], "web")
    assert sim.get("/api/v1/instances/frontend").json()["id"] == before["id"]
    assert sim.get("/api/v1/instances/web").status_code == 404
    assert sim.driver.specs[before["id"]].name == "frontend"
    assert rename(sim, "frontend", "frontend").status_code == 200  # same name: nothing to do


def test_refusals_change_nothing(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web")
    create_vm("db")
    assert_refused(rename(sim, "web", "db"), 409, "name_taken")
    assert_refused(rename(sim, "web", "bad/name"), 422, "invalid_name")
    assert_refused(rename(sim, "nope", "other"), 404, "instance_not_found")
    with transaction(sim.cloud.db.sessions) as s:
        s.execute(update(Instance).where(Instance.name == "web").values(locked_by="some-operation"))
    assert_refused(rename(sim, "web", "other"), 409, "instance_busy")
    names = sorted(i["name"] for i in sim.get("/api/v1/instances").json()["items"])
    assert names == ["db", "web"]


def test_a_failing_backend_keeps_the_old_name(sim: SimCloud, create_vm: CreateVm) -> None:
    create_vm("web")
    sim.driver.fail_next["rename"] = 1
    assert rename(sim, "web", "other").status_code == 502
    assert sim.get("/api/v1/instances/web").status_code == 200


def test_a_pool_members_name_follows(sim: SimCloud, create_vm: CreateVm) -> None:
    vm_id = create_vm("web").json()["target_id"]
    with transaction(sim.cloud.db.sessions) as s:
        ws = s.scalar(select(Instance.workspace_id).where(Instance.id == vm_id))
        pool = Pool(workspace_id=ws, name="p", template={"image": "tiny"})
        s.add(pool)
        s.flush()
        s.add(PoolMember(pool_id=pool.id, instance_id=vm_id, name="web", status="available"))
    assert rename(sim, "web", "renamed").status_code == 200
    with sim.cloud.db.sessions() as s:
        assert s.scalar(select(PoolMember.name).where(PoolMember.instance_id == vm_id)) == "renamed"
