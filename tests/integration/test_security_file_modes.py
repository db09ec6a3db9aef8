"""Issue 13, finding "the database and disks are world-readable": another local user of the host
(``nobody``) must not read cloudlet's database, its sign-in key, images, or a running VM's disk
and seed, nor list the data folder, while QEMU (running as libvirt's own user) still boots the VM.
A deployment laid out by an older version is tightened in place at start, its sign-in key moves
out of the database into ``jwt.key`` (sign-ins made before keep working), and the server refuses
to start with a config file that holds a secret and that anyone may read."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port
from tests.integration.conftest import (
    CLOUDLET,
    Server,
    import_tiny,
    running_server,
    traversable_tmp,
    wait_guest_http,
    wait_state,
)
from tests.integration.nobody import opened, probe, tree

pytestmark = pytest.mark.integration
VM, HOSTNAME = "fm1", "fm-host"
PASSWORD = "correct horse battery staple 13"


@pytest.fixture(scope="module")
def qemu_gid(libvirt_conn) -> int:  # type: ignore[no-untyped-def]
    """The group libvirt runs QEMU with (its DAC base label), as libvirt itself tells it."""
    caps = ET.fromstring(libvirt_conn.getCapabilities())
    label = caps.find("host/secmodel[model='dac']/baselabel[@type='qemu']")
    assert label is not None and label.text, "libvirt reports no DAC label for QEMU"
    return int(label.text.split(":")[1].lstrip("+"))


@pytest.fixture(scope="module")
def server(libvirt_conn) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    with running_server(libvirt_conn, traversable_tmp("server-modes-")) as s:
        yield s


@pytest.fixture(scope="module")
def vm(server, tiny_image) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with server.client() as c:
        import_tiny(c, tiny_image)
        c.create_instance(name=VM, image="tiny", memory=128, hostname=HOSTNAME)
        vm: dict[str, Any] = c.instance(VM)
        image = c.image("tiny")
        vm["image_path"] = str(server.data_dir / "images" / f"{image['id']}.{image['format']}")
    wait_guest_http(vm["ip"], HOSTNAME)
    return vm


def files_of(server: Server, vm: dict[str, Any]) -> dict[str, Path]:
    folder = server.data_dir / "instances" / vm["id"]
    return {
        "database": server.data_dir / "cloudlet.db",
        "key": server.data_dir / "jwt.key",
        "image": Path(vm["image_path"]),
        "disk": folder / "disk.qcow2",
        "seed": folder / "seed.iso",
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(server: Server, vm: dict[str, Any], qemu_gid: int) -> None:
    """Nobody opens anything, and every mode is what the layout promises."""
    files = files_of(server, vm)
    attempts = tree(server.data_dir) + [("read", str(p)) for p in files.values()]
    assert opened(probe(attempts)) == {}
    for what, path in files.items():
        assert path.is_file(), f"no {what} at {path}"
    data = server.data_dir
    for folder in (data, data / "instances", data / "instances" / vm["id"], data / "images"):
        st = folder.stat()
        assert (oct(stat.S_IMODE(st.st_mode)), st.st_gid) == (oct(0o710), qemu_gid), folder
    assert mode(files["database"]) == 0o600
    assert mode(files["key"]) == 0o600
    for what in ("image", "disk", "seed"):
        assert mode(files[what]) & 0o077 == 0, f"{what} is {oct(mode(files[what]))}"
    for private in ("operation-logs", "volumes"):
        if (data / private).exists():
            assert mode(data / private) & 0o007 == 0, private


def test_another_local_user_reads_nothing_while_the_vm_runs(server, vm, qemu_gid) -> None:  # type: ignore[no-untyped-def]
    assert_private(server, vm, qemu_gid)
    wait_guest_http(vm["ip"], HOSTNAME)  # QEMU reached its disk and seed through the new modes


def test_an_older_layout_is_tightened_and_its_key_leaves_the_database(server, vm, qemu_gid) -> None:  # type: ignore[no-untyped-def]
    with server.client() as c:
        c.request("POST", "/users", json={"username": "alice", "password": PASSWORD, "is_admin": True})
    login = httpx.post(server.url + "/api/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    access = login.json()["access_token"]
    server.stop()
    try:
        # What an older version left: world-readable folders and files, the key in the database.
        files = files_of(server, vm)
        key = files["key"].read_text().strip()
        files["key"].unlink()
        with sqlite3.connect(files["database"]) as db:
            db.execute("INSERT INTO meta (key, value) VALUES ('jwt_secret', ?)", (key,))
        os.chown(server.data_dir, 0, 0)
        for path in [server.data_dir, *server.data_dir.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        for path in (files["database"], files["image"], files["disk"], files["seed"]):
            path.chmod(0o644)
        assert opened(probe([("read", str(files["database"]))]))  # the attack works on that layout

        server.start()
        assert_private(server, vm, qemu_gid)
        assert files["key"].read_text().strip() == key
        with sqlite3.connect(files["database"]) as db:
            assert db.execute("SELECT count(*) FROM meta WHERE key = 'jwt_secret'").fetchone() == (0,)
        me = httpx.get(server.url + "/api/v1/auth/me", headers={"Authorization": f"Bearer {access}"})
        assert me.status_code == 200 and me.json()["username"] == "alice"
        assert "tightened" in server.log.read_text()

        with server.client() as c:  # QEMU opens its files again after the change
            c.action(VM, "stop")
            c.action(VM, "start")
            wait_state(c, VM, "running")
    finally:
        if server.proc is None:  # a failure above: the fixture's clean-up needs it running
            server.start()
    wait_guest_http(vm["ip"], HOSTNAME)


def test_the_server_refuses_a_config_file_anyone_may_read_holding_a_secret(libvirt_conn) -> None:  # type: ignore[no-untyped-def]
    folder = traversable_tmp("server-config-")
    try:
        config = folder / "cloudlet.toml"
        config.write_text(f'jwt_secret = "{"k" * 40}"\n')
        config.chmod(0o644)
        env = {
            **os.environ,
            "CLOUDLET_DATA_DIR": str(folder / "data"),
            "CLOUDLET_VM_DRIVER": "sim",
            "CLOUDLET_CONTAINER_DRIVER": "none",
        }
        proc = subprocess.run(
            [CLOUDLET, "server", "--config", str(config), "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode != 0
        assert str(config) in proc.stderr and "chmod" in proc.stderr, proc.stderr
        assert not (folder / "data" / "cloudlet.db").exists()  # refused before touching anything

        config.chmod(0o600)
        ok = Server(
            data_dir=folder / "data",
            database_url=None,
            cidr="10.255.255.0/24",
            extra_env={
                "CLOUDLET_CONFIG": str(config),
                "CLOUDLET_VM_DRIVER": "sim",
                "CLOUDLET_CONTAINER_DRIVER": "none",
            },
        )
        ok.start()
        ok.stop()
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)
