"""cloud-init through the create call: user-data merged with guest users, hashed passwords, static
addresses; the seed carries it; bad input is refused before anything exists."""

from __future__ import annotations

import email
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pycdlib
import pytest
import yaml
from passlib.hash import sha512_crypt

from cloudlet.drivers.libvirt.seed import build_nocloud_seed
from cloudlet.errors import Invalid
from cloudlet.services import cloudinit
from cloudlet.services.cloudinit import GuestUser, StaticNic
from tests.unit.conftest import SimCloud
from tests.unit.test_api_bad_input import NOTHING, assert_refused

CreateVm = Callable[..., httpx.Response]
Footprint = Callable[[], dict[str, int]]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2yM4Zb6m3kY9xX6kq3Wq7lZ8WmXjv1c3sQZ9Yh8pQk user@host"
SHA512 = sha512_crypt.using(rounds=5000).hash("s3cret")


def cloud_config(text: str | None) -> dict[str, Any]:
    assert text is not None and text.startswith("#cloud-config\n"), text
    parsed: dict[str, Any] = yaml.safe_load(text)
    return parsed


def users(*given: GuestUser) -> tuple[GuestUser, ...]:
    return cloudinit.check_users(given, lambda k: k.strip())


# -- composing user-data -------------------------------------------------------------------------------
def test_nothing_asked_leaves_the_default_seed() -> None:
    assert cloudinit.compose_user_data(hostname="web1", ssh_keys=[KEY]) is None


def test_plain_password_is_hashed_and_never_written() -> None:
    alice = users(GuestUser("alice", password="correct horse", ssh_keys=(KEY,), sudo=True, shell="/bin/bash"))
    text = cloudinit.compose_user_data(hostname="web1", ssh_keys=[KEY], users=alice, ssh_password_auth=True)
    assert "correct horse" not in (text or "")
    config = cloud_config(text)
    assert config["hostname"] == "web1" and config["ssh_authorized_keys"] == [KEY]
    assert config["ssh_pwauth"] is True
    default, entry = config["users"]
    assert default == "default"  # the image's own user stays
    assert entry["name"] == "alice" and entry["lock_passwd"] is False
    assert entry["hashed_passwd"].startswith("$6$")
    assert sha512_crypt.verify("correct horse", entry["hashed_passwd"])
    assert (entry["sudo"], entry["shell"], entry["ssh_authorized_keys"]) == (
        "ALL=(ALL) NOPASSWD:ALL",
        "/bin/bash",
        [KEY],
    )


def test_given_hash_is_kept_as_is() -> None:
    bob = users(GuestUser("bob", password_hash=SHA512, groups=("adm", "video")))
    entry = cloud_config(cloudinit.compose_user_data(hostname="h", ssh_keys=[], users=bob))["users"][1]
    assert entry == {"name": "bob", "lock_passwd": False, "hashed_passwd": SHA512, "groups": ["adm", "video"]}


def test_callers_cloud_config_is_merged_and_wins_on_its_own_keys() -> None:
    theirs = (
        "#cloud-config\nhostname: chosen\nusers:\n  - name: carol\npackages: [nginx]\n"
        "ssh_authorized_keys: [k2]\n"
    )
    config = cloud_config(
        cloudinit.compose_user_data(
            hostname="web1", ssh_keys=["k1"], users=users(GuestUser("dave")), user_data=theirs
        )
    )
    assert config["hostname"] == "chosen" and config["packages"] == ["nginx"]
    assert config["ssh_authorized_keys"] == ["k1", "k2"]
    assert config["users"] == ["default", {"name": "dave"}, {"name": "carol"}]


def test_a_script_alone_goes_through_untouched() -> None:
    script = "#!/bin/sh\necho hi > /tmp/hi\n"
    assert cloudinit.compose_user_data(hostname="h", ssh_keys=[KEY], user_data=script) == script


def test_a_script_with_users_becomes_multipart() -> None:
    script = "#!/bin/sh\necho hi\n"
    text = cloudinit.compose_user_data(
        hostname="h", ssh_keys=[], users=users(GuestUser("eve")), user_data=script
    )
    message = email.message_from_string(text or "")
    assert message.is_multipart()
    parts = [(p.get_content_type(), p.get_payload(decode=True).decode()) for p in message.get_payload()]
    assert [t for t, _ in parts] == ["text/cloud-config", "text/x-shellscript"]
    assert yaml.safe_load(parts[0][1])["users"] == ["default", {"name": "eve"}]
    assert parts[1][1] == script


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("echo hi", "must start with"),
        ("#cloud-config\nusers: [unclosed\n", "not valid YAML"),
        ("#cloud-config\n- a\n- b\n", "mapping"),
        ("#cloud-config\n" + "x" * 70000, "limited to"),
    ],
    ids=["no-header", "bad-yaml", "a-list", "too-big"],
)
def test_bad_user_data_is_refused(text: str, message: str) -> None:
    with pytest.raises(Invalid, match=message) as err:
        cloudinit.check_user_data(text)
    assert err.value.code == "invalid_user_data"


def test_mime_user_data_cannot_take_users() -> None:
    mime = "Content-Type: multipart/mixed; boundary=x\n\n--x--\n"
    assert cloudinit.compose_user_data(hostname="h", ssh_keys=[], user_data=mime) == mime
    with pytest.raises(Invalid, match="MIME"):
        cloudinit.compose_user_data(hostname="h", ssh_keys=[], user_data=mime, users=users(GuestUser("f")))


@pytest.mark.parametrize(
    ("user", "message"),
    [
        (GuestUser("Alice"), "invalid user name"),
        (GuestUser("a" * 33), "invalid user name"),
        (GuestUser("x", password="p", password_hash=SHA512), "not both"),
        (GuestUser("x", password_hash="$1$abc$0123456789012345678901"), "crypt"),
        (GuestUser("x", password_hash="plain"), "crypt"),
        (GuestUser("x", password="line\nbreak"), "control"),
        (GuestUser("x", shell="bash"), "absolute"),
        (GuestUser("x", groups=("Wheel",)), "group"),
    ],
    ids=["uppercase", "too-long", "both", "md5", "plain-hash", "newline", "relative-shell", "bad-group"],
)
def test_bad_users_are_refused(user: GuestUser, message: str) -> None:
    with pytest.raises(Invalid, match=message) as err:
        users(user)
    assert err.value.code == "invalid_user"


def test_a_user_given_twice_is_refused() -> None:
    with pytest.raises(Invalid, match="twice"):
        users(GuestUser("x"), GuestUser("x"))


# -- network config --------------------------------------------------------------------------------
def test_static_config_gives_each_nic_its_address_and_one_default_route() -> None:
    text = cloudinit.static_network_config(
        [
            StaticNic("52:54:00:00:00:05", "10.0.0.5/24", "10.0.0.1", ("10.0.0.1", "9.9.9.9")),
            StaticNic("52:54:00:00:01:05", "10.0.1.5/24", "10.0.1.1"),
        ]
    )
    config = yaml.safe_load(text)
    assert config["version"] == 2
    eth0, eth1 = config["ethernets"]["eth0"], config["ethernets"]["eth1"]
    assert eth0["match"] == {"macaddress": "52:54:00:00:00:05"} and eth0["dhcp4"] is False
    assert eth0["addresses"] == ["10.0.0.5/24"]
    assert eth0["routes"] == [{"to": "default", "via": "10.0.0.1"}]
    assert eth0["nameservers"] == {"addresses": ["10.0.0.1", "9.9.9.9"]}
    assert eth1["addresses"] == ["10.0.1.5/24"] and "routes" not in eth1


@pytest.mark.parametrize("config", [{}, {"version": 3}, {"network": {"version": "2"}}, {"network": []}])
def test_bad_network_config_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(Invalid) as err:
        cloudinit.check_network_config(config)
    assert err.value.code == "invalid_network_config"


def test_the_seed_carries_the_network_config(tmp_path: Path) -> None:
    seed = tmp_path / "seed.iso"
    config = cloudinit.static_network_config([StaticNic("52:54:00:00:00:05", "10.0.0.5/24", "10.0.0.1")])
    build_nocloud_seed(seed, instance_id="i-1", hostname="web1", network_config=config)
    iso = pycdlib.PyCdlib()
    iso.open(str(seed))
    try:
        import io

        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path="/network-config")
    finally:
        iso.close()
    assert out.getvalue().decode() == config


# -- through the API -------------------------------------------------------------------------------
def test_create_with_users_and_user_data_reaches_the_driver(sim: SimCloud, create_vm: CreateVm) -> None:
    resp = create_vm(
        "web1",
        user_data="#cloud-config\nruncmd: [[touch, /tmp/ran]]\n",
        users=[{"name": "alice", "password": "pw-alice", "sudo": True}],
        ssh_keys=[KEY],
    )
    assert resp.status_code == 200, resp.text
    spec = sim.driver.specs[resp.json()["target_id"]]
    config = cloud_config(spec.user_data)
    assert config["runcmd"] == [["touch", "/tmp/ran"]] and config["ssh_authorized_keys"] == [KEY]
    assert sha512_crypt.verify("pw-alice", config["users"][1]["hashed_passwd"])
    assert spec.network_config is None
    assert "pw-alice" not in sim.get(f"/api/v1/operations/{resp.json()['id']}").text


def test_chosen_static_address_is_written_into_the_guest(sim: SimCloud, create_vm: CreateVm) -> None:
    resp = create_vm("web1", ip="10.47.0.77", static_ip=True, dns=["9.9.9.9"])
    assert resp.status_code == 200, resp.text
    vm = sim.get("/api/v1/instances/web1").json()
    assert vm["ip"] == "10.47.0.77"
    spec = sim.driver.specs[vm["id"]]
    eth0 = yaml.safe_load(spec.network_config or "")["ethernets"]["eth0"]
    assert eth0["match"]["macaddress"] == vm["mac"]
    assert eth0["addresses"] == ["10.47.0.77/24"]
    assert eth0["routes"] == [{"to": "default", "via": "10.47.0.1"}]
    assert eth0["nameservers"] == {"addresses": ["9.9.9.9"]}


def test_a_taken_address_is_409_and_leaves_nothing(
    sim: SimCloud, create_vm: CreateVm, footprint: Footprint
) -> None:
    assert create_vm("web1", ip="10.47.0.20").status_code == 200
    before = footprint()
    assert_refused(create_vm("web2", ip="10.47.0.20"), 409, "ip_taken")
    assert footprint() == before


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"ip": "10.48.0.5"}, "invalid_ip"),
        ({"ip": "10.47.0.1"}, "invalid_ip"),  # the gateway
        ({"ip": "10.47.0.254"}, "invalid_ip"),  # the DHCP spare
        ({"ip": "nope"}, "invalid_ip"),
        ({"dns": ["9.9.9.9"]}, "invalid_dns"),
        ({"static_ip": True, "dns": ["999.1.1.1"]}, "invalid_dns"),
        ({"static_ip": True, "network_config": {"version": 2}}, "invalid_network_config"),
        ({"network_config": {"version": 9}}, "invalid_network_config"),
        ({"user_data": "hello"}, "invalid_user_data"),
        ({"users": [{"name": "Root"}]}, "invalid_user"),
        ({"users": [{"name": "a", "ssh_keys": ["nonsense"]}]}, "invalid_ssh_key"),
    ],
)
def test_bad_cloud_init_input_is_422_and_leaves_nothing(
    create_vm: CreateVm, footprint: Footprint, fields: dict[str, Any], code: str
) -> None:
    assert_refused(create_vm("web1", **fields), 422, code)
    assert footprint() == NOTHING


# -- the tiny guest's reader of it -------------------------------------------------------------------
NETCFG_AWK = Path(cloudinit.__file__).parent.parent / "tinyimage" / "guest" / "netcfg.awk"


def guest_reads(config: str, tmp_path: Path) -> list[str]:
    """What the tiny guest's netcfg.awk (run by busybox, as in the guest) makes of a network config."""
    source = tmp_path / "network-config"
    source.write_text(config)
    busybox = shutil.which("busybox")
    assert busybox, "busybox is installed by scripts/setup-host"
    out = subprocess.run([busybox, "awk", "-f", str(NETCFG_AWK), str(source)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_tiny_guest_reads_what_cloudlet_writes(tmp_path: Path) -> None:
    config = cloudinit.static_network_config(
        [
            StaticNic("52:54:00:00:00:05", "10.0.0.5/24", "10.0.0.1", ("10.0.0.1", "9.9.9.9")),
            StaticNic("52:54:00:00:01:05", "10.0.1.5/24"),
        ]
    )
    assert guest_reads(config, tmp_path) == [
        "eth0 52:54:00:00:00:05 10.0.0.5/24 10.0.0.1 10.0.0.1,9.9.9.9",
        "eth1 52:54:00:00:01:05 10.0.1.5/24 - -",
    ]


def test_tiny_guest_reads_hand_written_configs(tmp_path: Path) -> None:
    config = """network:
  version: 2
  ethernets:
    enp1s0:
      match:
        macaddress: "52:54:00:AB:CD:EF"
      addresses: [192.168.1.10/24, "192.168.1.11/24"]  # two addresses: the first counts
      routes:
        - to: 0.0.0.0/0
          via: 192.168.1.254
      nameservers:
        search: [example.com]
        addresses:
          - 1.1.1.1
    eth1:
      dhcp4: true
"""
    assert guest_reads(config, tmp_path) == ["enp1s0 52:54:00:ab:cd:ef 192.168.1.10/24 192.168.1.254 1.1.1.1"]
