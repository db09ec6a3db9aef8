"""The OS Cloud API on the simulated driver: OS Cloud's routes, fields, messages and wire format
(HTTP 200 + {"status": "error", "error_msg"}; Flask's JSON), names as it took them, sizes as it
parsed them, ids never given twice. The same calls against real VMs: tests/integration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloudlet.compat.oscloud import create_oscloud_app
from tests.unit.conftest import SimCloud

MIB, GIB = 1024**2, 1024**3
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2yM4Zb6m3kY9xX6kq3Wq7lZ8WmXjv1c3sQZ9Yh8pQk student@os"
JSON = {"Content-Type": "application/json"}
LAB_VM = {
    "name": "my_vm",
    "image": "ubuntu_22.04",
    "network": "default",
    "mem_size": "2G",
    "disk_size": "10G",
}


@pytest.fixture
def oc(sim: SimCloud, qcow2_image: Path) -> Iterator[TestClient]:
    """An OS Cloud listener on ``sim``, with the image the lab sheet names."""
    imported = sim.post(
        "/api/v1/images", params={"wait": 10}, json={"name": "ubuntu_22.04", "source_path": str(qcow2_image)}
    )
    assert imported.json()["status"] == "succeeded", imported.text
    main = FastAPI()
    main.state.cloud = sim.cloud
    settings = sim.cloud.settings.model_copy(update={"oscloud_listen": "5000"})
    with TestClient(create_oscloud_app(main, settings), base_url="http://localhost:5000") as client:
        yield client


def post(oc: TestClient, path: str, body: dict[str, Any]) -> httpx.Response:
    response: httpx.Response = oc.post(path, json=body)
    return response


def refused(response: httpx.Response, message: str | None = None, status: int = 200) -> dict[str, Any]:
    """An OS Cloud refusal: its status (200 for OS Cloud's own), its envelope, its words."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "error" and body["error_msg"] and body["error"] == body["error_msg"], body
    assert message is None or body["error_msg"] == message, body
    return body


def test_the_lab_sheet_session_byte_for_byte(sim: SimCloud, oc: TestClient) -> None:
    assert oc.get("/").text == "Welcome to OS Cloud!\n"
    assert oc.get("/vm_list").content == b"[]\n"
    created = oc.post("/vm_create", headers=JSON, content=httpx.Request("POST", "/", json=LAB_VM).content)
    assert created.status_code == 200 and created.content == b'{"id":1,"status":"ok"}\n', created.text
    assert oc.get("/vm_list").content == b'[{"id":1,"name":"my_vm"}]\n'
    info = post(oc, "/vm_info", {"id": 1})
    ip = sim.get("/api/v1/instances/my_vm").json()["ip"]
    assert info.content == (
        b'{"disk_size":10737418240,"id":1,"ip":"' + ip.encode() + b'","mem_size":2147483648,'
        b'"name":"my_vm","network":"default","os":"ubuntu_22.04","state":"RUNNING"}\n'
    )
    assert post(oc, "/vm_stop", {"id": 1}).content == b'{"status":"ok"}\n'
    assert post(oc, "/vm_info", {"id": 1}).json()["state"] == "STOPPED"
    assert post(oc, "/vm_start", {"id": 1}).content == b'{"status":"ok"}\n'
    assert post(oc, "/vm_info", {"id": " 1 "}).json()["state"] == "RUNNING"  # it sent ids as text too


def test_the_native_api_shows_the_same_vm_by_the_same_name(sim: SimCloud, oc: TestClient) -> None:
    assert post(oc, "/vm_create", {**LAB_VM, "name": "Test.VM"}).json() == {"id": 1, "status": "ok"}
    native = sim.get("/api/v1/instances/Test.VM").json()
    assert (native["name"], native["hostname"], native["memory"], native["disk"]) == (
        "Test.VM",
        "test-vm",
        2048,
        10,
    )
    # VMs made natively get the next numbers, in the order they were made
    for name in ("web-a", "web_b"):
        body = {"name": name, "image": "ubuntu_22.04", "memory": 64}
        assert sim.post("/api/v1/instances", params={"wait": 10}, json=body).json()["status"] == "succeeded"
    listed = oc.get("/vm_list").json()
    assert listed == [{"id": 1, "name": "Test.VM"}, {"id": 2, "name": "web-a"}, {"id": 3, "name": "web_b"}]
    assert post(oc, "/vm_info", {"id": 3}).json()["name"] == "web_b"


def test_ssh_key_is_the_native_ssh_keys(sim: SimCloud, oc: TestClient) -> None:
    assert post(oc, "/vm_create", {**LAB_VM, "ssh_key": KEY + "\n"}).json()["status"] == "ok"
    native = {"name": "my-vm-native", "image": "ubuntu_22.04", "memory": 64, "ssh_keys": [KEY]}
    assert sim.post("/api/v1/instances", params={"wait": 10}, json=native).json()["status"] == "succeeded"
    ours, theirs = (
        sim.driver.specs[sim.get(f"/api/v1/instances/{name}").json()["id"]]
        for name in ("my_vm", "my-vm-native")
    )
    assert ours.ssh_keys == theirs.ssh_keys == (KEY,)
    assert ours.user_data == theirs.user_data  # nothing else differs in what the guest is given
    bad = refused(post(oc, "/vm_create", {**LAB_VM, "name": "k", "ssh_key": "not a key"}))
    assert bad["code"] == "invalid_ssh_key"


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ({"name": None}, "VM name not provided"),
        ({"name": ""}, "VM name not provided"),
        ({"image": ""}, "VM image not provided"),
        ({"network": None}, "VM network not provided"),
        ({"mem_size": ""}, "VM mem_size not provided"),
        ({"mem_size": 0}, "VM mem_size not provided"),
        ({"disk_size": None}, "VM disk_size not provided"),
        ({"name": "", "disk_size": ""}, "VM name not provided"),  # its order: name first
        ({"network": "", "mem_size": "lots"}, "VM network not provided"),
    ],
)
def test_each_required_field_has_its_message(oc: TestClient, missing: dict[str, Any], message: str) -> None:
    body = {k: v for k, v in {**LAB_VM, **missing}.items() if v is not None}
    refused(post(oc, "/vm_create", body), message)
    assert oc.get("/vm_list").json() == []


@pytest.mark.parametrize(
    ("mem_size", "disk_size", "memory_bytes", "disk_bytes"),
    [
        ("2G", "10G", 2 * GIB, 10 * GIB),
        ("512M", "2GiB", 512 * MIB, 2 * GIB),
        ("1.5G", "10 GB", 1536 * MIB, 10 * GIB),
        ("1 gigabyte", "1.5G", GIB, 2 * GIB),  # the disk is whole GiB: it shows the size it has
        (str(100 * MIB + 1), "1073741824", 101 * MIB, GIB),
        (256 * MIB, 3 * GIB, 256 * MIB, 3 * GIB),
    ],
)
def test_sizes_as_os_cloud_read_them_and_as_the_vm_has_them(
    sim: SimCloud, oc: TestClient, mem_size: Any, disk_size: Any, memory_bytes: int, disk_bytes: int
) -> None:
    assert post(oc, "/vm_create", {**LAB_VM, "mem_size": mem_size, "disk_size": disk_size}).json()["id"] == 1
    info = post(oc, "/vm_info", {"id": 1}).json()
    assert (info["mem_size"], info["disk_size"]) == (memory_bytes, disk_bytes)
    spec = sim.driver.specs[sim.get("/api/v1/instances/my_vm").json()["id"]]
    assert (spec.memory_mb * MIB, spec.disk_gb * GIB) == (memory_bytes, disk_bytes)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mem_size", "lots", "Invalid mem_size: lots"),
        ("mem_size", "-1G", "Invalid mem_size: -1G"),
        ("disk_size", "1e9", "Invalid disk_size: 1e9"),
        ("disk_size", True, "Invalid disk_size: True"),
    ],
)
def test_unreadable_sizes_in_os_cloud_words(oc: TestClient, field: str, value: Any, message: str) -> None:
    refused(post(oc, "/vm_create", {**LAB_VM, field: value}), message)


def test_sizes_cloudlet_cannot_give_are_refused_in_the_envelope(oc: TestClient) -> None:
    body = refused(
        post(oc, "/vm_create", {**LAB_VM, "mem_size": "16M"}), "memory must be between 64 and 1048576 MiB"
    )
    assert body["code"] == "invalid_size"
    assert refused(post(oc, "/vm_create", {**LAB_VM, "mem_size": "2T"}))["code"] == "invalid_size"
    assert oc.get("/vm_list").json() == []


def test_create_refusals_in_os_cloud_words_and_order(oc: TestClient) -> None:
    assert post(oc, "/vm_create", LAB_VM).json()["id"] == 1
    refused(post(oc, "/vm_create", LAB_VM), 'vm "my_vm" already exists')
    refused(post(oc, "/vm_create", {**LAB_VM, "network": "nope"}), 'vm "my_vm" already exists')  # name first
    refused(
        post(oc, "/vm_create", {**LAB_VM, "name": "b", "network": "nope", "image": "x"}),
        'network "nope" not found',
    )
    refused(
        post(oc, "/vm_create", {**LAB_VM, "name": "b", "image": "ubuntu_20.04"}),
        'disk template "ubuntu_20.04" not found',
    )
    assert oc.get("/vm_list").json() == [{"id": 1, "name": "my_vm"}]


def test_a_name_whose_hostname_is_taken_is_refused_clearly(oc: TestClient) -> None:
    assert post(oc, "/vm_create", LAB_VM).json()["id"] == 1
    body = refused(
        post(oc, "/vm_create", {**LAB_VM, "name": "My.VM"}),
        "the name 'My.VM' gives the hostname 'my-vm', which instance 'my_vm' already has: choose another "
        "name, or give a hostname of its own",
    )
    assert body["code"] == "hostname_taken"
    for bad in ("a/b", "..", " my_vm", "x" * 64, "tab\there"):
        assert refused(post(oc, "/vm_create", {**LAB_VM, "name": bad}))["code"] == "invalid_name", bad
    assert oc.get("/vm_list").json() == [{"id": 1, "name": "my_vm"}]


def test_unknown_ids_in_os_cloud_words(oc: TestClient) -> None:
    refused(post(oc, "/vm_info", {"id": 99}), 'vm "99" not found')
    refused(post(oc, "/vm_stop", {"id": 99}), "vm '99' not found")
    refused(post(oc, "/vm_start", {"id": "99"}), "vm '99' not found")
    refused(post(oc, "/vm_info", {"id": "abc"}), 'vm "abc" not found')
    refused(post(oc, "/vm_start", {"id": 1.5}), "vm '1.5' not found")
    for body in ({}, {"id": 0}, {"id": ""}, {"id": None}):
        for route in ("/vm_info", "/vm_stop", "/vm_start"):
            refused(post(oc, route, body), "VM id not provided")


def test_start_of_a_running_vm_is_ok_and_stop_of_a_stopped_one_an_error(
    sim: SimCloud, oc: TestClient
) -> None:
    assert post(oc, "/vm_create", LAB_VM).json()["id"] == 1
    assert post(oc, "/vm_start", {"id": 1}).json() == {"status": "ok"}  # as OS Cloud: ok, the VM runs on
    assert post(oc, "/vm_info", {"id": 1}).json()["state"] == "RUNNING"
    assert post(oc, "/vm_stop", {"id": 1}).json() == {"status": "ok"}
    body = refused(post(oc, "/vm_stop", {"id": 1}), "vm '1' is already stopped")
    assert body["code"] == "not_running"
    assert post(oc, "/vm_info", {"id": 1}).json()["state"] == "STOPPED"


def test_a_paused_vm_is_paused_not_stopped(sim: SimCloud, oc: TestClient) -> None:
    assert post(oc, "/vm_create", LAB_VM).json()["id"] == 1
    paused = sim.post("/api/v1/instances/my_vm/actions/pause", params={"wait": 10}).json()
    assert paused["status"] == "succeeded", paused
    assert post(oc, "/vm_info", {"id": 1}).json()["state"] == "PAUSED"
    body = refused(post(oc, "/vm_start", {"id": 1}))
    assert body["code"] == "vm_paused" and "paused, not stopped" in body["error_msg"]
    assert post(oc, "/vm_info", {"id": 1}).json()["state"] == "PAUSED"
    assert post(oc, "/vm_stop", {"id": 1}).json() == {"status": "ok"}  # powered off, as OS Cloud's quit
    assert post(oc, "/vm_info", {"id": 1}).json()["state"] == "STOPPED"


def test_ids_are_never_given_twice(sim: SimCloud, oc: TestClient) -> None:
    for n, name in enumerate(("a", "b", "c"), start=1):
        assert post(oc, "/vm_create", {**LAB_VM, "name": name, "mem_size": "64M"}).json()["id"] == n
    for name in ("c", "b"):  # the newest first: SQLite would give its number again
        deleted = sim.delete(f"/api/v1/instances/{name}", params={"force": True, "wait": 10}).json()
        assert deleted["status"] == "succeeded", deleted
    assert oc.get("/vm_list").json() == [{"id": 1, "name": "a"}]
    refused(post(oc, "/vm_info", {"id": 3}), 'vm "3" not found')
    assert post(oc, "/vm_create", {**LAB_VM, "name": "d", "mem_size": "64M"}).json()["id"] == 4
    failed_name = {**LAB_VM, "name": "e", "mem_size": "64M"}
    sim.driver.fail_next["create"] = 1
    assert post(oc, "/vm_create", failed_name).json()["status"] == "error"  # a failed create used 5
    assert post(oc, "/vm_create", failed_name).json()["id"] == 6
    assert [v["id"] for v in oc.get("/vm_list").json()] == [1, 4, 6]


def test_protocol_errors_keep_flasks_status_in_the_envelope(oc: TestClient) -> None:
    body = refused(oc.get("/vm_nope"), "the OS Cloud API has no /vm_nope", 404)
    assert body["code"] == "not_found"
    refused(oc.get("/vm_create"), "GET is not how /vm_create is called", 405)
    text = oc.post("/vm_create", content=b'{"name": "x"}', headers={"Content-Type": "text/plain"})
    refused(text, "send a JSON body with 'Content-Type: application/json'", 415)
    untyped = oc.post("/vm_create", content=b'{"name": "x"}', headers={"Content-Type": ""})
    assert untyped.status_code == 415  # a page's fetch() with a Blob body sends no type: no way in
    form = oc.post("/vm_create", data={"name": "x"})  # what curl -d sends without -H
    assert form.status_code == 415
    assert oc.post("/vm_create", content=b"{", headers=JSON).status_code == 400
    refused(oc.post("/vm_create", content=b"[1]", headers=JSON), "the body must be a JSON object", 400)
    assert (
        oc.post(
            "/vm_info", content=b'{"id": 1}', headers={"Content-Type": "application/json; charset=utf-8"}
        ).status_code
        == 200
    )


def test_a_missing_workspace_is_an_error_in_the_envelope(sim: SimCloud, tmp_path: Path) -> None:
    main = FastAPI()
    main.state.cloud = sim.cloud
    settings = sim.cloud.settings.model_copy(update={"oscloud_listen": "5000", "oscloud_workspace": "gone"})
    with TestClient(create_oscloud_app(main, settings), base_url="http://localhost:5000") as oc:
        refused(oc.get("/vm_list"), "workspace 'gone' does not exist")
