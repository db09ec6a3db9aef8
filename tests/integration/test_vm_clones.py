"""Clones of a real VM. A linked clone of a snapshot, taken while the source runs, boots with its own
address and hostname and sees the disk as it was at the snapshot; a full clone of the stopped source
sees everything written. On disk, the linked clone is backed by the image and the full one stands
alone."""

from __future__ import annotations

import json
import subprocess

import libvirt
import pytest

from cloudlet.drivers.libvirt.xml import CLOUDLET_NS, parse_metadata_element
from tests.integration.conftest import import_tiny, wait_guest_ssh
from tests.integration.test_events_and_cli import _cli
from tests.integration.test_vm_snapshots import read_marker, write_marker

pytestmark = pytest.mark.integration


def backing_of(server, instance_id: str) -> str | None:  # type: ignore[no-untyped-def]
    disk = server.data_dir / "instances" / instance_id / "disk.qcow2"
    out = subprocess.run(
        ["qemu-img", "info", "--force-share", "--output=json", str(disk)],
        capture_output=True,
        text=True,
        check=True,
    )
    backing: str | None = json.loads(out.stdout).get("backing-filename")
    return backing


def test_linked_clone_of_a_snapshot_and_full_clone(sqlite_server, tiny_image, ssh_key, libvirt_conn) -> None:  # type: ignore[no-untyped-def]
    key, pub = ssh_key
    with sqlite_server.client() as c:
        image = import_tiny(c, tiny_image)
        c.create_instance(name="origin", image="tiny", memory=128, ssh_keys=[pub])
        origin = c.instance("origin")
        wait_guest_ssh(key, origin["ip"])
        write_marker(key, origin["ip"], 512, "before")
        assert c.create_snapshot("origin", "base")["status"] == "succeeded"
        write_marker(key, origin["ip"], 600, "after")

        op = c.clone_instance("origin", "linked1", snapshot="base")
        assert op["status"] == "succeeded", op
        linked = c.instance("linked1")
        assert linked["state"] == "running" and linked["ip"] not in (None, origin["ip"])
        assert c.instance("origin")["state"] == "running"
        assert wait_guest_ssh(key, linked["ip"]) == "linked1"
        assert (read_marker(key, linked["ip"], 512), read_marker(key, linked["ip"], 600)) == ("before", "")
        backing = backing_of(sqlite_server, linked["id"])
        assert backing is not None and backing.startswith(str(sqlite_server.data_dir / "images"))
        assert str(image["id"]) in backing

        c.action("origin", "stop")
        out = _cli(sqlite_server, "vm", "clone", "origin", "full1", "--full")
        assert out.returncode == 0, out.stderr
        full = c.instance("full1")
        assert full["ip"] not in (origin["ip"], linked["ip"])
        assert wait_guest_ssh(key, full["ip"]) == "full1"
        assert (read_marker(key, full["ip"], 512), read_marker(key, full["ip"], 600)) == ("before", "after")
        assert backing_of(sqlite_server, full["id"]) is None

        busy = c.http.post("/api/v1/instances/full1/clone", json={"name": "nope"})
        assert busy.status_code == 409 and busy.json()["code"] == "instance_not_stopped"

        out = _cli(sqlite_server, "vm", "rename", "full1", "full2")  # while it runs
        assert out.returncode == 0, out.stderr
        renamed = c.instance("full2")
        assert (renamed["id"], renamed["ip"]) == (full["id"], full["ip"])
        dom = libvirt_conn.lookupByName(f"cloudlet-{full['id']}")
        label = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, CLOUDLET_NS, 0)
        assert parse_metadata_element(label).name == "full2"
        persistent = dom.metadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, CLOUDLET_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG
        )
        assert parse_metadata_element(persistent).name == "full2"
        for name in ("linked1", "full2", "origin"):
            c.delete_instance(name, force=True)
