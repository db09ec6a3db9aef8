"""`cloudlet plan` and `cloudlet apply -f cloud.yaml` on the real backends: a network, an image, a
VM on two networks, a container and a pool are made from one file; the VM answers over SSH and the
container runs; applying the same file again changes nothing, and a changed power state converges."""

from __future__ import annotations

import json
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import cache_dir, next_subnet, ssh_run, wait_guest_ssh
from tests.integration.docker_images import BUSYBOX_REF, ensure_busybox_image
from tests.integration.test_events_and_cli import _cli
from tests.integration.tiny_iso import build_tiny_iso, tiny_raw_disk

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


def test_launch_from_config_json_installs_from_an_iso(
    sqlite_server, tiny_image, libvirt_conn, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The replaced system's JSON: the ISO is imported (named after its file), the VM boots from it
    as a CD-ROM with an empty disk of the asked size; the same JSON again changes nothing."""
    folder = Path(tempfile.mkdtemp(prefix="apply-iso-", dir=cache_dir()))  # an allowed import folder
    try:
        iso = build_tiny_iso(
            tiny_raw_disk(tiny_image, tmp_path / "tiny.raw"), folder / "Tiny Installer.iso", tmp_path
        )
        legacy = tmp_path / "launch.json"
        legacy.write_text(
            json.dumps([{"name": "legacy-vm", "ram": 128, "cpu": 1, "disk": 2, "iso": str(iso)}])
        )
        applied = _cli(sqlite_server, "apply", "-f", str(legacy))
        assert applied.returncode == 0, applied.stderr + applied.stdout
        with sqlite_server.client() as c:
            image = c.image("tiny-installer")
            assert image["kind"] == "iso", image
            vm = c.instance("legacy-vm")
            assert (vm["state"], vm["memory"], vm["disk"], vm["image"]) == (
                "running",
                128,
                2,
                "tiny-installer",
            )
            dom = libvirt_conn.lookupByName(f"cloudlet-{vm['id']}")
            cdroms = ET.fromstring(dom.XMLDesc(0)).findall("devices/disk[@device='cdrom']")
            assert len(cdroms) == 1 and cdroms[0].find("source") is not None
            again = _cli(sqlite_server, "apply", "-f", str(legacy))
            assert "nothing to change" in again.stdout, again.stdout + again.stderr
            c.delete_instance("legacy-vm", force=True)
            c.delete_image("tiny-installer")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
