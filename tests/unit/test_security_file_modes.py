"""Issue 13, finding "the database and disks are world-readable": the rules of the data folder's
layout (cloudlet.filemodes), the refusals at start, and the sign-in key's move out of the
database into its own file (cloudlet.services.signing_keys), with sign-ins made before it still
accepted. The real attack, as the local user nobody on a real server and VM, is in
tests/integration/test_security_file_modes.py."""

from __future__ import annotations

import logging
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cloudlet import filemodes
from cloudlet.api.app import create_app
from cloudlet.config import Settings
from cloudlet.db.models import Meta
from cloudlet.db.session import transaction
from cloudlet.drivers.sim import SimDriver
from cloudlet.filemodes import DataLayout, Sharing, UnsafeFiles
from cloudlet.services import signing_keys, users
from cloudlet.services.cloud import Cloud
from cloudlet.services.logins import signing_key

SQLITE = "sqlite:///{}"
PASSWORD = "a long enough password 13"
OTHER_UID = 54321  # a user that is not the one running the tests
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changes owners (root only)")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def layout_in(data: Path, **kw: object) -> DataLayout:
    return DataLayout(data, SQLITE.format(data / "cloudlet.db"), **kw)  # type: ignore[arg-type]


# -- the layout ----------------------------------------------------------------------------------------
def test_a_new_data_folder_is_private_and_shared_with_qemu_by_group_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    layout = layout_in(data)
    layout.check()
    layout.prepare()
    assert mode(data) == 0o700
    for name in filemodes.PRIVATE_DIRS:
        assert mode(data / name) == 0o700, name
    assert mode(data / "cloudlet.db") == 0o600  # made before SQLite opens it: its -wal/-shm follow
    gid = 65534 if os.geteuid() == 0 else os.getegid()
    layout.share(Sharing(filemodes.SHARED_DIR, gid))
    for folder in (data, data / "instances", data / "images"):
        assert (mode(folder), folder.stat().st_gid) == (0o710, gid), folder
    assert not (data / "volumes").exists()  # libvirt makes the pool's folder, with its permissions
    assert layout.tightened == set()  # nothing was found too open


def test_an_older_world_readable_layout_is_tightened_in_place(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    instance = data / "instances" / str(uuid.uuid4())
    instance.mkdir(parents=True)
    (data / "images").mkdir()
    (data / "operation-logs").mkdir()
    outside = tmp_path / "not-cloudlets.txt"
    outside.write_text("x")
    outside.chmod(0o644)
    files = [
        data / "cloudlet.db",
        data / "cloudlet.db-wal",
        data / "jwt.key",
        data / "images" / "a.qcow2",
        instance / "disk.qcow2",
        instance / "seed.iso",
        data / "operation-logs" / "op.log",
    ]
    for path in files:
        path.write_text("x")
        path.chmod(0o644)
    (data / "images" / "link").symlink_to(outside)
    for folder in (data, data / "instances", instance, data / "images", data / "operation-logs"):
        folder.chmod(0o755)
    layout = layout_in(data)
    with caplog.at_level(logging.INFO, logger="cloudlet.filemodes"):
        layout.prepare()
        layout.share(Sharing(filemodes.SHARED_DIR, os.getegid()))
        layout.report()
    for path in files[:-1]:
        assert mode(path) == 0o600, path
    assert mode(data / "operation-logs") == 0o700  # what is inside no one else can reach any more
    for folder in (data, data / "instances", instance, data / "images"):
        assert mode(folder) == 0o710, folder
    assert mode(outside) == 0o644  # a symlink is never followed
    assert "tightened the modes of" in caplog.text and str(data / "jwt.key") in caplog.text


def test_unknown_hypervisor_keeps_groups_and_takes_reading(tmp_path: Path) -> None:
    """libvirt unreachable at start: folders keep the group an earlier start gave them."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    layout_in(data).share(None)
    assert mode(data) == 0o711


def test_sharing_follows_the_hypervisors_user(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Sharing.for_hypervisor(None) == Sharing(0o700)  # no hypervisor user (sim)
    assert Sharing.for_hypervisor((os.geteuid(), 1234)) == Sharing(0o700)  # qemu:///session
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert Sharing.for_hypervisor((64055, 64055)) == Sharing(0o710, 64055)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "getegid", lambda: 1000)
    monkeypatch.setattr(os, "getgroups", lambda: [1000, 64055])
    assert Sharing.for_hypervisor((64055, 64055)) == Sharing(0o710, 64055)  # a member of its group
    monkeypatch.setattr(os, "getgroups", lambda: [1000])
    assert Sharing.for_hypervisor((64055, 64055)) == Sharing(0o711)  # cannot give the group


# -- refusals --------------------------------------------------------------------------------------------
def refusal(layout: DataLayout, config: Path | None = None) -> str:
    with pytest.raises(UnsafeFiles) as refused:
        layout.check(config)
    return refused.value.detail


def test_a_data_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    detail = refusal(layout_in(data, uid=OTHER_UID))
    assert str(data) in detail and f"chown {OTHER_UID}" in detail


def test_a_folder_above_writable_by_others_is_refused_unless_sticky(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    detail = refusal(layout_in(shared / "data"))
    assert f"chmod go-w {shared}" in detail
    shared.chmod(0o1777)  # like /tmp: others cannot move what is not theirs
    layout_in(shared / "data").check()


@needs_root
def test_a_key_file_of_root_open_to_others_is_refused_for_a_non_root_server(tmp_path: Path) -> None:
    key = tmp_path / "jwt.key"  # root's (the tests' user); the server runs as OTHER_UID
    key.write_text("k" * 40)
    key.chmod(0o644)
    data = tmp_path / "data"
    detail = refusal(layout_in(data, key_file=key, uid=OTHER_UID))
    assert str(key) in detail and "chmod o-rwx" in detail
    key.chmod(0o640)  # shared with a group on purpose: allowed
    layout_in(data, key_file=key, uid=OTHER_UID).check()


@needs_root
def test_a_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "jwt.key"
    key.write_text("k" * 40)
    key.chmod(0o600)
    os.chown(key, OTHER_UID, -1)
    detail = refusal(layout_in(tmp_path / "data", key_file=key))
    assert str(key) in detail and f"uid {OTHER_UID}" in detail


def test_own_key_and_database_files_are_tightened_not_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    key = tmp_path / "keys" / "jwt.key"  # outside the data folder: an admin's file, group kept
    key.parent.mkdir()
    key.write_text("k" * 40)
    key.chmod(0o664)
    (data / "cloudlet.db").write_text("")
    (data / "cloudlet.db").chmod(0o644)
    layout = layout_in(data, key_file=key)
    layout.check()
    layout.prepare()
    assert (mode(key), mode(data / "cloudlet.db")) == (0o640, 0o600)


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        ('jwt_secret = "' + "s" * 40 + '"\n', "jwt_secret"),
        ('oidc_client_secret = "abc"\n', "oidc_client_secret"),
        ('database_url = "postgresql://cloudlet:pw@db/cloudlet"\n', "database_url"),
    ],
)
def test_a_config_file_anyone_may_read_holding_a_secret_is_refused(
    tmp_path: Path, content: str, secret: str
) -> None:
    config = tmp_path / "cloudlet.toml"
    config.write_text(content)
    config.chmod(0o644)
    detail = refusal(layout_in(tmp_path / "data"), config)
    assert str(config) in detail and secret in detail and f"chmod o-rwx {config}" in detail
    config.chmod(0o640)
    layout_in(tmp_path / "data").check(config)


def test_a_config_file_without_secrets_may_be_read_but_not_written_by_anyone(tmp_path: Path) -> None:
    config = tmp_path / "cloudlet.toml"
    config.write_text('port = 8471\ndatabase_url = "postgresql://cloudlet@db/cloudlet"\n')
    config.chmod(0o644)
    layout_in(tmp_path / "data").check(config)
    config.chmod(0o666)
    assert f"chmod o-w {config}" in refusal(layout_in(tmp_path / "data"), config)


def test_the_server_exits_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cloudlet.server import refuse_unsafe_files

    config = tmp_path / "cloudlet.toml"
    config.write_text('jwt_secret = "' + "s" * 40 + '"\n')
    config.chmod(0o604)
    with pytest.raises(SystemExit) as exited:
        refuse_unsafe_files(Settings(data_dir=tmp_path / "data"), config)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and str(config) in err


def test_the_server_makes_its_files_private() -> None:
    from cloudlet.server import private_files

    before = os.umask(0o022)
    try:
        private_files()
        assert os.umask(0o022) == 0o077
    finally:
        os.umask(before)


# -- the sign-in key ---------------------------------------------------------------------------------------
def settings_for(data: Path) -> Settings:
    return Settings(data_dir=data, vm_driver="sim", container_driver="none", resync_interval=3600)


@contextmanager
def app_on(data: Path) -> Iterator[tuple[TestClient, Cloud]]:
    driver = SimDriver()
    cloud = Cloud.build(settings_for(data), backend=(driver, driver))
    with TestClient(create_app(cloud.settings, cloud=cloud, on_admin_token=lambda _t: None)) as client:
        yield client, cloud


def test_a_key_an_older_version_kept_in_the_database_moves_out_and_sign_ins_keep_working(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with app_on(data) as (client, cloud):
        with transaction(cloud.db.sessions) as s:
            users.create_user(s, "ann", PASSWORD, is_admin=True)
        access = client.post("/api/v1/auth/login", json={"username": "ann", "password": PASSWORD}).json()
        # What an older version had: the key in the database, no key file
        key = (data / "jwt.key").read_text().strip()
        with transaction(cloud.db.sessions) as s:
            s.add(Meta(key=signing_keys.LEGACY_ROW, value=key))
            s.delete(s.get(Meta, signing_keys.FINGERPRINT_ROW))
    (data / "jwt.key").unlink()

    with app_on(data) as (client, cloud):
        me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {access['access_token']}"})
        assert me.status_code == 200 and me.json()["username"] == "ann"
        with cloud.db.reads() as s:
            assert s.scalar(select(Meta).where(Meta.key == signing_keys.LEGACY_ROW)) is None
    assert (data / "jwt.key").read_text().strip() == key
    assert mode(data / "jwt.key") == 0o600


def sessions_for(tmp_path: Path):  # type: ignore[no-untyped-def]
    from cloudlet.db import migrate
    from cloudlet.db.session import Database

    db = Database(SQLITE.format(tmp_path / "keys.db"))
    migrate.upgrade(db.engine)
    return db


def test_a_replica_without_the_shared_key_refuses_to_make_its_own(tmp_path: Path) -> None:
    db = sessions_for(tmp_path)
    first, second = tmp_path / "a.key", tmp_path / "b.key"
    with transaction(db.sessions) as s:
        key = signing_key(s, None, first, shared_database=True)
    with pytest.raises(signing_keys.SigningKeyMissing) as refused, transaction(db.sessions) as s:
        signing_key(s, None, second, shared_database=True)
    assert str(second) in refused.value.detail and "jwt_key_file" in refused.value.detail
    assert not second.exists()
    second.write_text(key + "\n")  # the fix: the same key
    with transaction(db.sessions) as s:
        assert signing_key(s, None, second, shared_database=True) == key
    # one server on its own SQLite file may lose its key: a new one is made (sign-ins end)
    with transaction(db.sessions) as s:
        assert signing_key(s, None, tmp_path / "c.key", shared_database=False) != key
    db.dispose()


def test_a_configured_secret_clears_a_key_left_in_the_database(tmp_path: Path) -> None:
    db = sessions_for(tmp_path)
    with transaction(db.sessions) as s:
        s.add(Meta(key=signing_keys.LEGACY_ROW, value="old" * 20))
    with transaction(db.sessions) as s:
        assert signing_key(s, "c" * 40, tmp_path / "unused.key", shared_database=False) == "c" * 40
    with db.sessions() as s:
        assert s.get(Meta, signing_keys.LEGACY_ROW) is None
        assert s.get(Meta, signing_keys.FINGERPRINT_ROW) is not None
    assert not (tmp_path / "unused.key").exists()
    db.dispose()


def test_two_servers_making_the_key_at_once_share_the_first(tmp_path: Path) -> None:
    path = tmp_path / "jwt.key"
    assert signing_keys.write_key_file(path, "first" * 10) == "first" * 10
    assert signing_keys.write_key_file(path, "second" * 10) == "first" * 10
    assert mode(path) == 0o600 and [p.name for p in tmp_path.iterdir()] == ["jwt.key"]
