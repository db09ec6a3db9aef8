"""The NoCloud seed ISO: what cloud-init (and the tiny guest) will read from it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pycdlib
import pytest

from cloudlet.drivers.libvirt.seed import build_nocloud_seed

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0tIjh1S6Ih1ysXUSZVYmlb2PVtQ5uSjXA6W0VLo4mJ me@host"


def _read(iso_path: Path) -> tuple[dict[str, object], dict[str, str]]:
    """(facts about the volume, file contents by Rock Ridge name) of a seed ISO."""
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        facts = {
            "label": iso.pvd.volume_identifier.decode().strip(),
            "rock_ridge": iso.has_rock_ridge(),
            "joliet": iso.has_joliet(),
            "names": {
                iso.full_path_from_dirrecord(c, rockridge=True) for c in iso.list_children(rr_path="/")
            },
        }
        files = {}
        for name in ("meta-data", "user-data"):
            rr, joliet = io.BytesIO(), io.BytesIO()
            iso.get_file_from_iso_fp(rr, rr_path=f"/{name}")
            iso.get_file_from_iso_fp(joliet, joliet_path=f"/{name}")
            assert rr.getvalue() == joliet.getvalue()
            files[name] = rr.getvalue().decode()
    finally:
        iso.close()
    return facts, files


def _yaml_value(line: str, key: str) -> str:
    assert line.startswith(f"{key}: ")
    value = json.loads(line.removeprefix(f"{key}: "))
    assert isinstance(value, str)
    return value


def test_seed_has_label_and_real_file_names(tmp_path: Path) -> None:
    dest = tmp_path / "seed.iso"
    build_nocloud_seed(dest, instance_id="i-123", hostname="web-1", ssh_keys=[KEY + "\n"])
    facts, files = _read(dest)
    assert facts["label"] == "cidata"
    assert facts["rock_ridge"] and facts["joliet"]
    assert facts["names"] == {"/.", "/..", "/meta-data", "/user-data"}

    meta = files["meta-data"].splitlines()
    assert _yaml_value(meta[0], "instance-id") == "i-123"
    assert _yaml_value(meta[1], "local-hostname") == "web-1"
    assert meta[2:] == ["public-keys:", f"  - {json.dumps(KEY)}"]

    user = files["user-data"].splitlines()
    assert user[0] == "#cloud-config"
    assert _yaml_value(user[1], "hostname") == "web-1"
    assert user[2:] == ["ssh_authorized_keys:", f"  - {json.dumps(KEY)}"]
    assert list(tmp_path.iterdir()) == [dest]  # no temporary file left behind


def test_user_strings_are_quoted_yaml(tmp_path: Path) -> None:
    tricky = 'ssh-rsa AAAAB3Nza command="echo hi: #x" \\back é'
    dest = tmp_path / "seed.iso"
    build_nocloud_seed(dest, instance_id="id: with # yaml", hostname="h", ssh_keys=[tricky])
    _, files = _read(dest)
    assert _yaml_value(files["meta-data"].splitlines()[0], "instance-id") == "id: with # yaml"
    item = files["user-data"].splitlines()[3]
    assert json.loads(item.removeprefix("  - ")) == tricky


def test_custom_user_data_is_written_as_is(tmp_path: Path) -> None:
    dest = tmp_path / "seed.iso"
    script = "#!/bin/sh\necho hello\n"
    build_nocloud_seed(dest, instance_id="i-1", hostname="box", ssh_keys=[KEY], user_data=script)
    _, files = _read(dest)
    assert files["user-data"] == script
    assert "public-keys:" in files["meta-data"]  # keys still reach the guest


def test_no_keys_gives_empty_list(tmp_path: Path) -> None:
    dest = tmp_path / "seed.iso"
    build_nocloud_seed(dest, instance_id="i-1", hostname="box")
    _, files = _read(dest)
    assert "ssh_authorized_keys: []" in files["user-data"].splitlines()
    assert "public-keys" not in files["meta-data"]


@pytest.mark.parametrize(
    "hostname",
    ["", "-lead", "trail-", "under_score", "dot.ted", "a" * 64, "spa ce", "new\nline", "é"],
)
def test_bad_hostname_is_refused(tmp_path: Path, hostname: str) -> None:
    dest = tmp_path / "seed.iso"
    with pytest.raises(ValueError, match="hostname"):
        build_nocloud_seed(dest, instance_id="i-1", hostname=hostname)
    assert not dest.exists()


@pytest.mark.parametrize(
    "key",
    [
        "",
        "   ",
        "ssh-ed25519",
        "ssh-ed25519 AAAA\nssh-rsa BBBB",
        "ssh-ed25519 AAAA\x00",
        "ssh-ed25519 A\u2028B",
    ],
)
def test_bad_ssh_key_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="ssh key"):
        build_nocloud_seed(tmp_path / "seed.iso", instance_id="i-1", hostname="ok", ssh_keys=[key])
    assert list(tmp_path.iterdir()) == []


def test_bad_instance_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="instance id"):
        build_nocloud_seed(tmp_path / "seed.iso", instance_id="a\nb", hostname="ok")


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("cloudlet.drivers.libvirt.seed.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        build_nocloud_seed(tmp_path / "seed.iso", instance_id="i-1", hostname="ok")
    assert list(tmp_path.iterdir()) == []
