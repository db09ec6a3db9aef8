"""The OS Cloud API of the replaced system, on its own port, against real VMs."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import free_port
from tests.integration.conftest import import_tiny, running_server, traversable_tmp, wait_guest_http

pytestmark = pytest.mark.integration


def test_oscloud_api(libvirt_conn, tiny_image):  # type: ignore[no-untyped-def]
    port = free_port()
    env = {"CLOUDLET_OSCLOUD_LISTEN": f"127.0.0.1:{port}"}
    with running_server(libvirt_conn, traversable_tmp("oscloud-"), extra_env=env) as server:
        with server.client() as c:
            import_tiny(c, tiny_image)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=300) as oc:
            assert "Welcome" in oc.get("/").text
            assert oc.get("/vm_list").json() == []
            r = oc.post(
                "/vm_create",
                json={
                    "name": "my_vm".replace("_", "-"),
                    "image": "tiny",
                    "network": "default",
                    "mem_size": "128M",
                    "disk_size": "2G",
                },
            )
            assert r.status_code == 200 and r.json() == {"id": 1, "status": "ok"}
            assert oc.get("/vm_list").json() == [{"id": 1, "name": "my-vm"}]
            info = oc.post("/vm_info", json={"id": 1}).json()
            assert info["state"] == "RUNNING" and info["os"] == "tiny" and info["network"] == "default"
            assert info["mem_size"] == 128 * 1024**2 and info["disk_size"] == 2 * 1024**3
            wait_guest_http(info["ip"], "my-vm")
            assert oc.post("/vm_stop", json={"id": 1}).json() == {"status": "ok"}
            assert oc.post("/vm_info", json={"id": 1}).json()["state"] == "STOPPED"
            assert oc.post("/vm_start", json={"id": 1}).json() == {"status": "ok"}
            assert oc.post("/vm_info", json={"id": 1}).json()["state"] == "RUNNING"

            missing = oc.post("/vm_info", json={"id": 99})
            assert (
                missing.status_code == 404 and missing.json()["status"] == "error" and missing.json()["error"]
            )
            bad = oc.post("/vm_create", json={"name": "x", "image": "tiny", "mem_size": "lots"})
            assert bad.status_code == 422 or bad.status_code == 400
            assert bad.json()["status"] == "error" and "mem_size" in bad.json()["error"]
            dup = oc.post("/vm_create", json={"name": "my-vm", "image": "tiny", "mem_size": "64M"})
            assert dup.status_code == 409 and dup.json()["status"] == "error"
