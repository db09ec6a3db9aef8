"""Issue 13, "leaks and edges": what one workspace's members learn of another's, and what a
viewer learns of secrets. A CIDR-overlap 409 named another workspace's network; a host-port 409
named another workspace's container; a workspace viewer read container environment values (often
passwords and API keys)."""

from __future__ import annotations

from typing import Any

from tests.unit.conftest import SimCloud
from tests.unit.test_tenancy import add_member, bearer, login, make_user

SECRET = "s3cr3t-value-0123456789"


def foreign_workspace(sim: SimCloud) -> dict[str, str]:
    """Headers of a user in a workspace of their own (not the default one)."""
    make_user(sim, "mallory")
    token = login(sim, "mallory")["access_token"]
    assert (
        sim.client.post("/api/v1/workspaces", json={"name": "ws-m"}, headers=bearer(token)).status_code == 201
    )
    return bearer(token, "ws-m")


def test_a_cidr_clash_does_not_name_another_workspaces_network(sim: SimCloud) -> None:
    made = sim.post(
        "/api/v1/networks", json={"name": "payroll-db", "cidr": "10.88.0.0/24"}, params={"wait": 5}
    )
    assert made.json()["status"] == "succeeded"
    mallory = foreign_workspace(sim)
    clash = sim.client.post(
        "/api/v1/networks", json={"name": "probe", "cidr": "10.88.0.0/16"}, headers=mallory
    )
    assert clash.status_code == 409 and clash.json()["code"] == "cidr_overlap"
    assert "payroll-db" not in clash.text and "10.88.0.0/24" not in clash.text
    # Within one workspace the clash is named: that helps and reveals nothing.
    own = sim.post("/api/v1/networks", json={"name": "again", "cidr": "10.88.0.128/25"})
    assert own.status_code == 409 and "payroll-db" in own.json()["detail"]


def test_a_host_port_clash_does_not_name_another_workspaces_container(sim: SimCloud) -> None:
    run = {"kind": "container", "image": "local/busybox:latest", "ports": [{"host": 8181, "container": 80}]}
    made = sim.post("/api/v1/instances", json={**run, "name": "billing-api"}, params={"wait": 5})
    assert made.json()["status"] == "succeeded", made.text
    mallory = foreign_workspace(sim)
    net = {"name": "net", "cidr": "10.89.0.0/24"}
    assert (
        sim.client.post("/api/v1/networks", json=net, headers=mallory, params={"wait": 5}).status_code == 200
    )
    clash = sim.client.post("/api/v1/instances", json={**run, "name": "x", "network": "net"}, headers=mallory)
    assert clash.status_code == 409 and clash.json()["code"] == "port_in_use"
    assert "billing-api" not in clash.text


def container_env(sim: SimCloud, headers: dict[str, str]) -> Any:
    listed = sim.client.get("/api/v1/instances", headers=headers).json()["items"]
    shown = sim.client.get("/api/v1/instances/app", headers=headers).json()
    assert [i["container"]["env"] for i in listed if i["name"] == "app"] == [shown["container"]["env"]]
    return shown["container"]["env"]


def test_viewers_see_environment_names_not_values(sim: SimCloud) -> None:
    run = {
        "kind": "container",
        "name": "app",
        "image": "local/busybox:latest",
        "env": {"DB_PASSWORD": SECRET},
    }
    assert sim.post("/api/v1/instances", json=run, params={"wait": 5}).json()["status"] == "succeeded"
    make_user(sim, "vera")
    make_user(sim, "otto")
    add_member(sim, "vera", "viewer")
    add_member(sim, "otto", "operator")
    viewer = bearer(login(sim, "vera")["access_token"])
    operator = bearer(login(sim, "otto")["access_token"])

    assert container_env(sim, viewer) == {"DB_PASSWORD": None}
    for path in ("/api/v1/instances", "/api/v1/instances/app", "/api/v1/operations"):
        assert SECRET not in sim.client.get(path, headers=viewer).text
    assert container_env(sim, operator) == {"DB_PASSWORD": SECRET}
    assert container_env(sim, sim.headers) == {"DB_PASSWORD": SECRET}

    # An owner's token scoped to the viewer role is a viewer.
    scoped = sim.post("/api/v1/tokens", json={"name": "ro", "role": "viewer"}).json()["token"]
    assert container_env(sim, bearer(scoped)) == {"DB_PASSWORD": None}
