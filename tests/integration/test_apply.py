"""`cloudlet plan` and `cloudlet apply -f cloud.yaml` on the real backends: a network, an image, a
VM on two networks, a container and a pool are made from one file; the VM answers over SSH and the
container runs; applying the same file again changes nothing, and a changed power state converges."""

from __future__ import annotations

import pytest
import yaml

from tests.integration.conftest import next_subnet, ssh_run, wait_guest_ssh
from tests.integration.docker_images import BUSYBOX_REF, ensure_busybox_image
from tests.integration.test_events_and_cli import _cli

pytestmark = pytest.mark.integration


def test_apply_a_whole_setup_twice(sqlite_server, tiny_image, ssh_key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    key, pub = ssh_key
    ensure_busybox_image()
    document = {
        "networks": [{"name": "appnet", "cidr": next_subnet()}],
        "images": [{"name": "tiny-img", "path": str(tiny_image)}],
        "vms": [
            {
                "name": "app-vm",
                "image": "tiny-img",
                "memory": 128,
                "ssh_keys": [pub],
                "nics": [{"network": "default"}, {"network": "appnet"}],
                "user_data": "#!/bin/sh\necho applied > /run/from-apply\n",
            }
        ],
        "containers": [
            {"name": "app-box", "image": BUSYBOX_REF, "command": ["sleep", "3600"], "network": "appnet"}
        ],
        "pools": [
            {
                "name": "app-pool",
                "template": {"image": "tiny-img", "memory": 64},
                "min_ready": 0,
                "max_size": 1,
            }
        ],
    }
    cloud_yaml = tmp_path / "cloud.yaml"
    cloud_yaml.write_text(yaml.safe_dump(document))

    plan = _cli(sqlite_server, "plan", "-f", str(cloud_yaml))
    assert plan.returncode == 0, plan.stderr
    for name in ("appnet", "tiny-img", "app-vm", "app-box", "app-pool"):
        assert name in plan.stdout
    applied = _cli(sqlite_server, "apply", "-f", str(cloud_yaml))
    assert applied.returncode == 0, applied.stderr + applied.stdout

    with sqlite_server.client() as c:
        vm = c.instance("app-vm")
        assert vm["state"] == "running" and [n["network"] for n in vm["nics"]] == ["default", "appnet"]
        wait_guest_ssh(key, vm["ip"])
        out = ssh_run(key, vm["ip"], "cat /run/from-apply")
        assert out.stdout.strip() == "applied", out.stderr
        box = c.instance("app-box")
        assert box["state"] == "running" and box["container"]["status"] == "running"
        assert c.request("GET", "/pools/app-pool")["name"] == "app-pool"

        again = _cli(sqlite_server, "apply", "-f", str(cloud_yaml))
        assert again.returncode == 0 and "nothing to change" in again.stdout, again.stdout + again.stderr

        document["vms"][0]["state"] = "stopped"
        cloud_yaml.write_text(yaml.safe_dump(document))
        stopped = _cli(sqlite_server, "apply", "-f", str(cloud_yaml))
        assert stopped.returncode == 0, stopped.stderr
        assert c.instance("app-vm")["state"] == "stopped"
        assert "nothing to change" in _cli(sqlite_server, "plan", "-f", str(cloud_yaml)).stdout

        document["networks"][0]["cidr"] = next_subnet()
        cloud_yaml.write_text(yaml.safe_dump(document))
        conflict = _cli(sqlite_server, "apply", "-f", str(cloud_yaml))
        assert conflict.returncode != 0 and "apply_conflict" in conflict.stderr, conflict.stderr

        c.request("DELETE", "/pools/app-pool")
        for name in ("app-vm", "app-box"):
            c.delete_instance(name, force=True)
        c.delete_network("appnet")
