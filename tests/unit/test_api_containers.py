"""Containers through the API on the simulated drivers: what is refused, with which code, and that
a refused or failed run leaves no instance, address or backend object behind."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from cloudlet.config import Settings
from cloudlet.db.models import Instance, IPAllocation
from cloudlet.errors import Forbidden, Invalid
from cloudlet.services.containers import ContainerRequest, PortRequest, VolumeRequest, validate
from tests.unit.conftest import SimCloud

BUSYBOX = "local/busybox:latest"


def run(sim: SimCloud, **spec: Any):  # type: ignore[no-untyped-def]
    body = {"kind": "container", "image": BUSYBOX, **spec}
    return sim.post("/api/v1/instances", json=body, params={"wait": 10})


def problem(resp, status: int, code: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["code"] == code, body
    return body


def count_rows(sim: SimCloud, table: str) -> int:
    model = {"instances": Instance, "ip_allocations": IPAllocation}[table]
    with sim.cloud.db.reads() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def assert_nothing_left(sim: SimCloud) -> None:
    assert count_rows(sim, "instances") == 0
    assert count_rows(sim, "ip_allocations") == 0
    assert sim.containers.containers == {}


@pytest.mark.parametrize(
    ("spec", "status", "code"),
    [
        ({"name": "Web"}, 422, "invalid_name"),
        ({"name": "web", "image": "has space"}, 422, "invalid_image_ref"),
        ({"name": "web", "image": "nothing/here:1"}, 422, "unknown_image"),
        ({"name": "web", "ports": [{"host": 0, "container": 80}]}, 422, "invalid_port"),
        ({"name": "web", "ports": [{"host": 80, "container": 80}] * 2}, 422, "invalid_port"),
        ({"name": "web", "ports": [{"host": 80, "container": 80, "host_ip": "nope"}]}, 422, "invalid_port"),
        ({"name": "web", "volumes": [{"name": "data", "path": "relative"}]}, 422, "invalid_volume"),
        ({"name": "web", "volumes": [{"name": "data", "path": "/"}]}, 422, "invalid_volume"),
        ({"name": "web", "volumes": [{"name": "Bad Name", "path": "/data"}]}, 422, "invalid_name"),
        ({"name": "web", "volumes": [{"path": "/data"}]}, 422, "invalid_volume"),
        ({"name": "web", "volumes": [{"host_path": "/", "path": "/host"}]}, 403, "host_mounts_forbidden"),
        ({"name": "web", "privileged": True}, 403, "privileged_forbidden"),
        ({"name": "web", "env": {"1BAD": "x"}}, 422, "invalid_env"),
        ({"name": "web", "cpus": 0}, 422, "invalid_size"),
        ({"name": "web", "memory": 1}, 422, "invalid_size"),
        ({"name": "web", "restart": "sometimes"}, 422, "invalid_restart"),
        ({"name": "web", "network": "nowhere"}, 422, "unknown_network"),
    ],
)
def test_bad_runs_are_refused_and_leave_nothing(
    sim: SimCloud, spec: dict[str, Any], status: int, code: str
) -> None:
    problem(run(sim, **spec), status, code)
    assert_nothing_left(sim)


def test_admin_settings_allow_host_mounts_and_privileged() -> None:
    req = ContainerRequest(
        name="admin", image=BUSYBOX, volumes=(VolumeRequest("/host", host_path="/srv"),), privileged=True
    )
    with pytest.raises(Forbidden):
        validate(req, Settings(allow_privileged=True))
    with pytest.raises(Forbidden):
        validate(req, Settings(allow_host_mounts=True))
    validate(req, Settings(allow_host_mounts=True, allow_privileged=True))
    with pytest.raises(Invalid):
        validate(
            ContainerRequest(name="a", image=BUSYBOX, volumes=(VolumeRequest("/h", host_path="rel"),)),
            Settings(allow_host_mounts=True),
        )


def test_image_references_follow_docker_grammar() -> None:
    ok = [
        "busybox",
        "local/busybox:latest",
        "registry.example.com:5000/team/app:1.2",
        "a" * 12,
        "sha256:" + "a" * 64,
    ]
    for ref in ok:
        validate(ContainerRequest(name="x", image=ref), Settings())
    for ref in ["", "Upper/case", "a b", "x:", ":tag", "a//b", "-lead"]:
        with pytest.raises(Invalid):
            validate(ContainerRequest(name="x", image=ref), Settings())


def test_run_list_act_and_delete(sim: SimCloud) -> None:
    resp = run(sim, name="web", ports=[{"host": 8080, "container": 80}], env={"A": "1"}, memory=64, cpus=0.5)
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
    shown = sim.get("/api/v1/instances/web").json()
    assert shown["kind"] == "container" and shown["state"] == "running" and shown["ip"]
    assert shown["container"]["image"] == BUSYBOX and len(shown["container"]["short_id"]) == 12
    assert shown["container"]["ports"] == [{"host": 8080, "container": 80, "protocol": "tcp", "host_ip": ""}]
    assert shown["memory"] == 64 and shown["container"]["cpus"] == 0.5

    # the same host port again: refused before anything is made
    problem(run(sim, name="web2", ports=[{"host": 8080, "container": 80}]), 409, "port_in_use")
    problem(run(sim, name="web"), 409, "name_taken")
    assert count_rows(sim, "instances") == 1

    kinds = sim.get("/api/v1/instances", params={"kind": "container"}).json()["items"]
    assert [i["name"] for i in kinds] == ["web"]
    assert sim.get("/api/v1/instances", params={"kind": "vm"}).json()["items"] == []

    for action, state in (
        ("pause", "paused"),
        ("resume", "running"),
        ("stop", "stopped"),
        ("start", "running"),
    ):
        op = sim.post(f"/api/v1/instances/web/actions/{action}", params={"wait": 10}).json()
        assert op["status"] == "succeeded", op
        assert sim.get("/api/v1/instances/web").json()["state"] == state
    problem(sim.post("/api/v1/instances/web/actions/resume"), 409, "invalid_state")
    op = sim.post("/api/v1/instances/web/actions/kill", params={"wait": 10, "signal": "SIGTERM"}).json()
    assert op["status"] == "succeeded" and sim.get("/api/v1/instances/web").json()["state"] == "stopped"
    problem(
        sim.post("/api/v1/instances/web/actions/kill", params={"signal": "rm -rf"}), 422, "validation_error"
    )

    assert sim.delete("/api/v1/instances/web", params={"wait": 10}).json()["status"] == "succeeded"
    assert_nothing_left(sim)


def test_a_port_taken_at_start_rolls_the_run_back(sim: SimCloud) -> None:
    """The engine has the last word on ports: a clash it reports at start undoes the create."""
    from cloudlet.drivers.base import ContainerSpec, InstanceSpec, PortSpec

    squatter = InstanceSpec(
        id="squatter", name="squatter", workspace_id="x", cpus=0, memory_mb=0, disk_gb=0, image_path=None,
        image_format=None, hostname="s", container=ContainerSpec(BUSYBOX, ports=(PortSpec(9090, 90),)),
    )  # fmt: skip
    sim.containers.create(squatter)
    sim.containers.start("squatter")
    op = run(sim, name="late", ports=[{"host": 9090, "container": 80}]).json()
    assert op["status"] == "failed" and op["error"]["code"] == "port_in_use", op
    assert count_rows(sim, "instances") == 0 and count_rows(sim, "ip_allocations") == 0
    assert list(sim.containers.containers) == ["squatter"]


def test_container_endpoints_refuse_vms_and_stopped_containers(sim: SimCloud) -> None:
    assert run(sim, name="idle").json()["status"] == "succeeded"
    sim.post("/api/v1/instances/idle/actions/stop", params={"wait": 10})
    problem(sim.post("/api/v1/instances/idle/exec", json={"command": ["true"]}), 409, "not_running")
    problem(sim.get("/api/v1/instances/idle/stats"), 409, "not_running")
    problem(sim.get("/api/v1/instances/nothing/logs"), 404, "instance_not_found")
    sim.containers.containers[sim.get("/api/v1/instances/idle").json()["id"]].logs.append(b"line 1\nline 2\n")
    assert sim.get("/api/v1/instances/idle/logs").text == "line 1\nline 2\n"


def test_container_images_on_the_sim(sim: SimCloud) -> None:
    images = sim.get("/api/v1/container-images").json()
    assert [i["tags"] for i in images] == [[BUSYBOX]]
    assert sim.get("/api/v1/container-images", params={"filter": "nothing"}).json() == []
    problem(sim.get("/api/v1/container-images/nothing:1"), 404, "image_not_found")
    problem(sim.get("/api/v1/container-images/search", params={"q": "nginx"}), 502, "registry_unreachable")
    problem(sim.get("/api/v1/container-images/search", params={"q": "bad term!"}), 422, "invalid_search")
    op = sim.post("/api/v1/container-images/pull", json={"image": "alpine:3"}, params={"wait": 10}).json()
    assert op["status"] == "failed" and op["error"]["code"] == "registry_unreachable"
    assert run(sim, name="user").json()["status"] == "succeeded"
    problem(sim.delete(f"/api/v1/container-images/{BUSYBOX}"), 409, "image_in_use")


def test_port_requests_are_specs() -> None:
    from cloudlet.services.containers import port_spec

    assert port_spec(PortRequest(1, 2, "udp", "127.0.0.1")).protocol == "udp"
