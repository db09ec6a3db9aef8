"""A refused create leaves nothing behind: no row, no address, no backend object, no DHCP entry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from cloudlet.db.models import Image, Network
from cloudlet.db.session import transaction
from tests.unit.conftest import SimCloud

CreateVm = Callable[..., httpx.Response]
Footprint = Callable[[], dict[str, int]]
NOTHING = {
    "instance_rows": 0,
    "ip_allocations": 0,
    "api_instances": 0,
    "api_addresses_used": 0,
    "driver_instances": 0,
    "dhcp_hosts": 0,
}
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB2yM4Zb6m3kY9xX6kq3Wq7lZ8WmXjv1c3sQZ9Yh8pQk user@host"


def assert_refused(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = resp.json()
    assert body["code"] == code
    return body


@pytest.mark.parametrize(
    "name",
    [
        "a" * 64,
        "",
        "a/b",
        "/",
        ".",
        "..",
        " web",
        "web ",
        "   ",
        "we\x00b",
        "we\nb",
        "we\u202eb",
        "we\u00a0b",
    ],
    ids=[
        "64-chars",
        "empty",
        "slash",
        "only-slash",
        "dot",
        "dot-dot",
        "leading-space",
        "trailing-space",
        "only-spaces",
        "nul",
        "newline",
        "bidi-override",
        "no-break-space",
    ],
)
def test_bad_name_is_422(sim: SimCloud, create_vm: CreateVm, footprint: Footprint, name: str) -> None:
    body = assert_refused(create_vm(name), 422, "invalid_name")
    assert "instance name" in body["detail"]
    assert footprint() == NOTHING


def test_63_character_name_is_accepted(sim: SimCloud, create_vm: CreateVm) -> None:
    name = "a" * 62 + "1"
    assert create_vm(name).json()["status"] == "succeeded"
    assert sim.get(f"/api/v1/instances/{name}").json()["hostname"] == name


def test_bad_hostname_is_422(create_vm: CreateVm, footprint: Footprint) -> None:
    body = assert_refused(create_vm("web1", hostname="Bad_Host"), 422, "invalid_name")
    assert "hostname" in body["detail"]
    assert footprint() == NOTHING


@pytest.mark.parametrize(
    "fields",
    [{"cpus": 0}, {"cpus": 65}, {"memory": 10}, {"memory": 0}, {"disk": 0}, {"disk": -1}, {"cpus": "two"}],
    ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()),
)
def test_bad_size_is_422(create_vm: CreateVm, footprint: Footprint, fields: dict[str, Any]) -> None:
    body = assert_refused(create_vm("web1", **fields), 422, "validation_error")
    assert [e["loc"][-1] for e in body["errors"]] == list(fields)
    assert footprint() == NOTHING


def test_unknown_image_is_422(create_vm: CreateVm, footprint: Footprint) -> None:
    body = assert_refused(create_vm("web1", image="nosuch"), 422, "unknown_image")
    assert "nosuch" in body["detail"]
    assert footprint() == NOTHING


def test_unknown_network_is_422(create_vm: CreateVm, footprint: Footprint) -> None:
    body = assert_refused(create_vm("web1", network="nosuch"), 422, "unknown_network")
    assert "nosuch" in body["detail"]
    assert footprint() == NOTHING


def test_disk_smaller_than_image_is_422(
    sim: SimCloud, make_qcow2: Callable[..., Path], create_vm: CreateVm, footprint: Footprint
) -> None:
    big = make_qcow2("big", "3G")
    imported = sim.post("/api/v1/images", params={"wait": 10}, json={"name": "big", "source_path": str(big)})
    assert imported.json()["status"] == "succeeded"

    body = assert_refused(create_vm("web1", image="big", disk=2), 422, "disk_too_small")
    assert "2 GiB" in body["detail"] and "3 GiB" in body["detail"]
    assert footprint() == NOTHING
    assert create_vm("web1", image="big", disk=3).json()["status"] == "succeeded"


@pytest.mark.parametrize(
    "key",
    [
        "not a key",
        "ssh-ed25519",
        "",
        "AAAAC3NzaC1lZDI1NTE5AAAAIB2yM4Zb6m3kY9xX6kq3Wq7lZ8WmXjv1c3sQZ9Yh8pQk",
        ED25519 + "\nssh-rsa AAAAinjected attacker",
        "ssh-ed25519 AAAA\x00evil",
    ],
    ids=["words", "type-only", "empty", "no-type", "embedded-newline", "control-char"],
)
def test_invalid_ssh_key_is_422(create_vm: CreateVm, footprint: Footprint, key: str) -> None:
    assert_refused(create_vm("web1", ssh_keys=[ED25519, key]), 422, "invalid_ssh_key")
    assert footprint() == NOTHING


@pytest.mark.parametrize(
    "key",
    [
        ED25519 + "\x7f",
        ED25519 + "\u2028ssh-rsa AAAAinjected",
        "ssh-ed25519 AAAA\u200bC3Nz",
        "ssh-rsa " + "A" * 17000,
    ],
    ids=["DEL", "unicode-line-separator", "zero-width-space", "over-16KiB"],
)
def test_ssh_key_the_seed_would_refuse_is_422_up_front(
    sim: SimCloud, create_vm: CreateVm, footprint: Footprint, key: str
) -> None:
    """The libvirt driver's seed builder (cloudlet.drivers.libvirt.seed.validate_ssh_key) refuses these
    keys with ValueError, so the API must refuse them before it accepts the create: otherwise the
    user gets a 202 and then a failed operation with an internal_error."""
    from cloudlet.drivers.libvirt.seed import validate_ssh_key

    with pytest.raises(ValueError):
        validate_ssh_key(key)
    assert_refused(create_vm("web1", ssh_keys=[key]), 422, "invalid_ssh_key")
    assert footprint() == NOTHING


def test_valid_ssh_keys_reach_the_driver(sim: SimCloud, create_vm: CreateVm) -> None:
    rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 me@laptop"
    vm_id = create_vm("web1", ssh_keys=[ED25519, rsa]).json()["target_id"]
    assert sim.driver.specs[vm_id].ssh_keys == (ED25519, rsa)


# -- the memory guard ----------------------------------------------------------------------------
def test_memory_beyond_the_host_is_409_naming_the_numbers(create_vm: CreateVm, footprint: Footprint) -> None:
    # The sim host has 8192 MiB available and the server keeps 512 MiB in reserve: 7680 MiB can be given.
    body = assert_refused(create_vm("web1", memory=7681), 409, "insufficient_memory")
    for number in ("7681", "7680", "8192", "512"):
        assert number in body["detail"]
    assert (body["requested_mb"], body["available_mb"], body["reserve_mb"]) == (7681, 8192, 512)
    assert footprint() == NOTHING


def test_memory_up_to_the_limit_is_accepted(sim: SimCloud, create_vm: CreateVm) -> None:
    assert create_vm("web1", memory=7680).json()["status"] == "succeeded"
    assert sim.get("/api/v1/instances/web1").json()["memory"] == 7680


def test_memory_guard_follows_the_host(sim: SimCloud, create_vm: CreateVm, footprint: Footprint) -> None:
    sim.driver.resources = type(sim.driver.resources)(cpus=8, memory_total_mb=8192, memory_available_mb=1024)
    body = assert_refused(create_vm("web1", memory=1024), 409, "insufficient_memory")
    assert "only 512 MiB" in body["detail"]
    assert footprint() == NOTHING
    assert create_vm("web1", memory=512).json()["status"] == "succeeded"


def test_image_still_importing_is_409(sim: SimCloud, create_vm: CreateVm, footprint: Footprint) -> None:
    with transaction(sim.cloud.db.sessions) as s:
        s.execute(update(Image).where(Image.name == "tiny").values(status="importing"))
    assert_refused(create_vm("web1"), 409, "image_not_ready")
    assert footprint() == NOTHING


def test_network_not_active_is_409(sim: SimCloud, create_vm: CreateVm, footprint: Footprint) -> None:
    with transaction(sim.cloud.db.sessions) as s:
        s.execute(update(Network).where(Network.name == "default").values(status="deleting"))
    assert_refused(create_vm("web1"), 409, "network_not_ready")
    assert footprint() == NOTHING
