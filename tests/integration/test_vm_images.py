"""Images on the real libvirt: an image downloaded from a URL, a stopped VM's disk published as an
image (a marker written to the first VM's disk is read back on a VM of the new image), and an ISO
install: a VM boots the installer CD, "installs" (writes a bootable system to its empty disk), gets
its CD ejected while it runs, and boots from its disk after that."""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from cloudlet.client import ApiError
from tests.integration.conftest import Server, running_server, ssh_run, traversable_tmp, wait_guest_ssh
from tests.integration.test_events_and_cli import _cli
from tests.integration.test_vm_snapshots import read_marker, write_marker
from tests.integration.tiny_iso import ISO_MARK, build_tiny_iso, tiny_raw_disk

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sqlite_server(libvirt_conn) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """The module's server, allowed to download images from loopback (the test's file server)."""
    allow = {"CLOUDLET_OUTBOUND_ALLOW": json.dumps(["127.0.0.1"])}
    with running_server(libvirt_conn, traversable_tmp("server-sqlite-"), extra_env=allow) as s:
        yield s


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on a thread, serving a folder: (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def image_file(server, image: dict[str, Any]) -> Path:  # type: ignore[no-untyped-def]
    return Path(server.data_dir) / "images" / f"{image['id']}.{image['format']}"


def domain_disks(libvirt_conn, instance_id: str, flags: int = 0) -> list[ET.Element]:  # type: ignore[no-untyped-def]
    dom = libvirt_conn.lookupByName(f"cloudlet-{instance_id}")
    return ET.fromstring(dom.XMLDesc(flags)).findall("devices/disk")


def media_of(disk: ET.Element) -> str:
    """The file in a drive; "" when it is empty (a running domain keeps a bare ``<source index=../>``)."""
    source = disk.find("source")
    return source.get("file", "") if source is not None else ""


def boot_device(disks: list[ET.Element]) -> str:
    """The file of the first device in the boot order that has media."""
    ordered = sorted(
        (int(boot.get("order", "0")), media_of(d)) for d in disks if (boot := d.find("boot")) is not None
    )
    return next((media for _, media in ordered if media), "")


def test_url_import_and_publish_a_stopped_vm(sqlite_server, tiny_image, ssh_key, file_server) -> None:  # type: ignore[no-untyped-def]
    key, pub = ssh_key
    root, base = file_server
    (root / "tiny.qcow2").write_bytes(tiny_image.read_bytes())
    sha = hashlib.sha256(tiny_image.read_bytes()).hexdigest()

    wrong = _cli(
        sqlite_server, "image", "import", "netbad", "--url", f"{base}/tiny.qcow2", "--sha256", "0" * 64
    )
    assert wrong.returncode == 1 and "checksum_mismatch" in wrong.stderr, wrong.stderr
    out = _cli(
        sqlite_server, "image", "import", "tinynet", "--url", f"{base}/tiny.qcow2", "--sha256", sha,
        "--os", "tiny", "--min-memory", "96",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sha in out.stdout
    with sqlite_server.client() as c:
        assert [i["name"] for i in c.images() if i["name"].startswith("net")] == []
        image = c.image("tinynet")
        assert (image["sha256"], image["source"], image["os"], image["min_memory"]) == (
            sha, f"{base}/tiny.qcow2", "tiny", 96,
        )  # fmt: skip
        with pytest.raises(ApiError) as err:
            c.create_instance(name="small", image="tinynet", memory=64)
        assert (err.value.code, err.value.problem["minimum_mb"]) == ("memory_too_small", 96)

        c.create_instance(name="pub1", image="tinynet", memory=128, ssh_keys=[pub])
        ip = c.instance("pub1")["ip"]
        wait_guest_ssh(key, ip)
        write_marker(key, ip, 512, "published")

        running = _cli(sqlite_server, "image", "publish", "pub1", "golden")
        assert running.returncode == 2 and "instance_running" in running.stderr, running.stderr
        c.action("pub1", "stop")
        out = _cli(sqlite_server, "image", "publish", "pub1", "golden")
        assert out.returncode == 0, out.stderr
        golden = c.image("golden")
        assert (golden["status"], golden["format"], golden["source"]) == ("ready", "qcow2", "instance:pub1")
        assert (golden["os"], golden["min_memory"]) == ("tiny", 96)  # taken from the VM's image
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "--output=json", str(image_file(sqlite_server, golden))],
                capture_output=True,
                check=True,
            ).stdout
        )
        assert "backing-filename" not in info  # flattened: it stands alone
        assert c.instance("pub1")["state"] == "stopped"
        c.delete_instance("pub1", force=True)
        c.delete_image("tinynet")  # nothing depends on it any more

        c.create_instance(name="pub2", image="golden", memory=128, ssh_keys=[pub])
        ip2 = c.instance("pub2")["ip"]
        wait_guest_ssh(key, ip2)
        assert read_marker(key, ip2, 512) == "published"
        c.delete_instance("pub2", force=True)


def ssh_pipe(
    key: Path, ip: str, src: Path, command: str, timeout: float = 600
) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` on the guest with ``src`` as its standard input."""
    options = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]
    with src.open("rb") as fh:
        return subprocess.run(
            ["ssh", "-i", str(key), *options, "-o", "LogLevel=ERROR", f"root@{ip}", command],
            stdin=fh,
            capture_output=True,
            timeout=timeout,
            check=False,
        )


def test_iso_install_boots_the_cd_then_the_disk(
    sqlite_server, tiny_image, ssh_key, libvirt_conn, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import libvirt

    key, pub = ssh_key
    raw = tiny_raw_disk(tiny_image, tmp_path / "tiny.raw")
    iso = build_tiny_iso(raw, tmp_path / "tiny.iso", tmp_path)
    with sqlite_server.client() as c:
        with iso.open("rb") as fh:
            c.upload_image("installer", fh, os="tinylinux", min_disk=1)
        image = c.image("installer")
        assert (image["format"], image["kind"], image["os"]) == ("iso", "iso", "tinylinux")

        c.create_instance(name="inst1", image="installer", memory=128, disk=1, ssh_keys=[pub])
        vm = c.instance("inst1")
        disks = domain_disks(libvirt_conn, vm["id"])
        cdrom = [d for d in disks if d.get("device") == "cdrom"]
        assert len(cdrom) == 1 and cdrom[0].find("readonly") is not None
        assert boot_device(disks) == str(image_file(sqlite_server, image))
        wait_guest_ssh(key, vm["ip"])
        assert ISO_MARK in ssh_run(key, vm["ip"], "cat /proc/cmdline").stdout  # booted from the CD
        size = ssh_run(key, vm["ip"], "cat /sys/block/vda/size").stdout.strip()
        assert int(size) * 512 == 1024**3  # an empty 1 GiB disk to install to

        with pytest.raises(ApiError) as err:
            c.delete_image("installer")
        assert (err.value.status, err.value.code) == (409, "image_in_use")

        # The "installer" writes a bootable system to the disk.
        installed = ssh_pipe(key, vm["ip"], raw, "cat > /dev/vda && sync")
        assert installed.returncode == 0, installed.stderr

        out = _cli(sqlite_server, "vm", "eject", "inst1")  # while it runs
        assert out.returncode == 0, out.stderr
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):  # the running domain and its definition
            disks = domain_disks(libvirt_conn, vm["id"], flags)
            cdrom = [d for d in disks if d.get("device") == "cdrom"]
            assert len(cdrom) == 1 and not media_of(cdrom[0]), ET.tostring(cdrom[0])
            assert boot_device(disks).endswith(f"/{vm['id']}/disk.qcow2")
        assert c.instance("inst1")["image"] is None
        again = _cli(sqlite_server, "vm", "eject", "inst1")
        assert again.returncode == 2 and "no_media" in again.stderr

        c.action("inst1", "stop")
        c.action("inst1", "start")
        wait_guest_ssh(key, vm["ip"])
        assert ISO_MARK not in ssh_run(key, vm["ip"], "cat /proc/cmdline").stdout  # booted from its disk

        # The installed VM is cloned whole (there is no base image to link to) and boots its disk.
        c.action("inst1", "stop")
        assert c.clone_instance("inst1", "inst1-copy", mode="full")["status"] == "succeeded"
        copy = c.instance("inst1-copy")
        assert wait_guest_ssh(key, copy["ip"]) == "inst1-copy"
        assert ISO_MARK not in ssh_run(key, copy["ip"], "cat /proc/cmdline").stdout
        c.delete_instance("inst1-copy", force=True)
        c.action("inst1", "start")

        # A stopped VM's drive is emptied in its definition only.
        c.create_instance(name="inst2", image="installer", memory=128, disk=1)
        c.action("inst2", "force-stop")
        second = c.instance("inst2")
        assert c.eject("inst2")["status"] == "succeeded"
        disks = domain_disks(libvirt_conn, second["id"], libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert [media_of(d) for d in disks if d.get("device") == "cdrom"] == [""]
        assert boot_device(disks).endswith(f"/{second['id']}/disk.qcow2")

        c.delete_image("installer")  # ejected everywhere: nothing holds it
        assert not image_file(sqlite_server, image).exists()
        c.delete_instance("inst1", force=True)
        c.delete_instance("inst2", force=True)
