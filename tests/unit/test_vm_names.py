"""VM names as the replaced systems took them (my_vm, Test.VM): shown back as given everywhere,
with the guest hostname and the DHCP/DNS entry made from the name; a hostname clash after deriving
is refused; containers keep DNS-label names."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import select

from cloudlet.db.models import Instance
from cloudlet.errors import Invalid
from cloudlet.services.names import check_vm_name, hostname_for
from tests.unit.conftest import SimCloud
from tests.unit.test_api_bad_input import NOTHING, assert_refused

CreateVm = Callable[..., httpx.Response]
Footprint = Callable[[], dict[str, int]]


@pytest.mark.parametrize(
    ("name", "hostname"),
    [
        ("web1", "web1"),
        ("xn--bcher-kva", "xn--bcher-kva"),  # a DNS label stays as it is, double dash and all
        ("my_vm", "my-vm"),
        ("Test.VM", "test-vm"),
        ("My VM (2)", "my-vm-2"),
        ("-web-", "web"),
        ("__a__b__", "a-b"),
        ("café", "cafe"),
        ("Ⅻ", "xii"),
        ("a" * 40 + "_" + "b" * 30, "a" * 40 + "-" + "b" * 22),
        ("a" * 62 + "_b", "a" * 62),  # cut at 63 without a trailing dash
    ],
)
def test_the_hostname_is_made_from_the_name(name: str, hostname: str) -> None:
    assert hostname_for(name) == hostname


def test_a_name_without_ascii_letters_gets_a_stable_hostname() -> None:
    made = hostname_for("日本")
    assert made.startswith("vm-") and len(made) == 11
    assert hostname_for("日本") == made and hostname_for("中国") != made


@pytest.mark.parametrize("name", ["my_vm", "Test.VM", "a b", "x" * 63, "vm[1]", "100%", "a?b#c", "ünï"])
def test_wide_names_pass(name: str) -> None:
    assert check_vm_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 64,
        "a/b",
        ".",
        "..",
        " a",
        "a ",
        "a\tb",
        "a\x7fb",
        "a\u200bb",
        "a\u2028b",
        "a\ud800b",
        5,
        None,
    ],
)
def test_unsafe_names_fail(name: object) -> None:
    with pytest.raises(Invalid) as info:
        check_vm_name(name)  # type: ignore[arg-type]
    assert info.value.code == "invalid_name"


@pytest.mark.parametrize("name", ["my_vm", "Test.VM", "My VM (2)", "100% ok?", "a#b"])
def test_the_native_api_shows_a_wide_name_as_given(sim: SimCloud, create_vm: CreateVm, name: str) -> None:
    op = create_vm(name).json()
    assert op["status"] == "succeeded", op
    vm = sim.get(f"/api/v1/instances/{quote(name, safe='')}").json()
    assert (vm["name"], vm["hostname"]) == (name, hostname_for(name))
    assert [i["name"] for i in sim.get("/api/v1/instances").json()["items"]] == [name]
    assert sim.driver.specs[vm["id"]].name == name  # the backend label carries the name itself
    hosts = [h for n in sim.driver.networks.values() for h in n.hosts.values()]
    assert [(h.ip, h.name) for h in hosts] == [(vm["ip"], hostname_for(name))]  # DHCP/DNS: the label


def test_a_hostname_clash_after_deriving_is_refused(
    sim: SimCloud, create_vm: CreateVm, footprint: Footprint
) -> None:
    assert create_vm("my_vm").json()["status"] == "succeeded"
    before = footprint()
    for clash in ("My.VM", "my-vm", "MY VM"):
        body = assert_refused(create_vm(clash), 409, "hostname_taken")
        assert "'my-vm'" in body["detail"] and "'my_vm'" in body["detail"], body
        assert footprint() == before
    assert (
        assert_refused(create_vm("my_vm"), 409, "name_taken")["detail"] == "an instance named 'my_vm' exists"
    )
    # a hostname of its own settles it
    assert create_vm("My.VM", hostname="my-vm-2").json()["status"] == "succeeded"


def test_the_claim_is_the_other_way_round_too(sim: SimCloud, create_vm: CreateVm) -> None:
    assert create_vm("my-vm").json()["status"] == "succeeded"
    assert_refused(create_vm("my_vm"), 409, "hostname_taken")


def test_a_renamed_vm_keeps_its_hostname_and_its_claim(sim: SimCloud, create_vm: CreateVm) -> None:
    assert create_vm("my_vm").json()["status"] == "succeeded"
    renamed = sim.client.patch("/api/v1/instances/my_vm", json={"name": "Other.VM"}, headers=sim.headers)
    assert renamed.status_code == 200 and renamed.json()["hostname"] == "my-vm", renamed.text
    assert_refused(create_vm("my-vm"), 409, "hostname_taken")
    assert create_vm("my_vm", hostname="my-vm-b").json()["status"] == "succeeded"


def test_explicit_hostnames_are_not_claimed(sim: SimCloud, create_vm: CreateVm) -> None:
    """As before: a hostname given apart from the name may repeat (on separate networks, say)."""
    assert create_vm("a", hostname="web").json()["status"] == "succeeded"
    assert create_vm("web").json()["status"] == "succeeded"
    assert create_vm("b", hostname="web").json()["status"] == "succeeded"
    with sim.cloud.db.reads() as s:
        claims = {name: dns for name, dns in s.execute(select(Instance.name, Instance.dns_name))}
    assert claims == {"a": None, "web": "web", "b": None}


def test_clones_take_wide_names(sim: SimCloud, create_vm: CreateVm) -> None:
    assert create_vm("web").json()["status"] == "succeeded"
    stopped = sim.post("/api/v1/instances/web/actions/stop", params={"wait": 10}).json()
    assert stopped["status"] == "succeeded"
    op = sim.post("/api/v1/instances/web/clone", params={"wait": 10}, json={"name": "Web_Copy"}).json()
    assert op["status"] == "succeeded", op
    assert sim.get("/api/v1/instances/Web_Copy").json()["hostname"] == "web-copy"
    refused = sim.post("/api/v1/instances/web/clone", params={"wait": 10}, json={"name": "web.copy"})
    assert_refused(refused, 409, "hostname_taken")


def test_containers_keep_dns_label_names(sim: SimCloud, create_vm: CreateVm, footprint: Footprint) -> None:
    body = {"kind": "container", "name": "my_box", "image": "local/busybox:latest"}
    assert_refused(sim.post("/api/v1/instances", json=body), 422, "invalid_name")
    body["name"] = "box"
    assert sim.post("/api/v1/instances", json=body, params={"wait": 10}).json()["status"] == "succeeded"
    renamed = sim.client.patch("/api/v1/instances/box", json={"name": "my_box"}, headers=sim.headers)
    assert_refused(renamed, 422, "invalid_name")
    assert create_vm("my_vm").json()["status"] == "succeeded"
    assert (
        sim.client.patch("/api/v1/instances/my_vm", json={"name": "Test.VM"}, headers=sim.headers).json()[
            "name"
        ]
        == "Test.VM"
    )


def test_a_refused_wide_name_leaves_nothing(create_vm: CreateVm, footprint: Footprint) -> None:
    assert_refused(create_vm("a/b"), 422, "invalid_name")
    assert footprint() == NOTHING
