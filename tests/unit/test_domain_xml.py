"""libvirt XML builders: a golden domain, round trips, escaping, and the network's DHCP layout."""

from __future__ import annotations

import dataclasses
import ipaddress
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cloudlet.db.models import Network as NetworkRow
from cloudlet.drivers.libvirt.xml import (
    CLOUDLET_NS,
    CloudletMetadata,
    DhcpHostEntry,
    Disk,
    Domain,
    Interface,
    Layer,
    MemoryDimm,
    Network,
    dhcp_hosts_of,
    memory_room_mb,
    parse_metadata_element,
    resized,
    to_string,
)
from cloudlet.services.networks import usable_addresses

GOLDEN = Path(__file__).parent / "golden"
INSTANCE_ID = "6f1c2b9e-3d4a-4b5c-8d7e-9f0a1b2c3d4e"
FOLDER = f"/var/lib/cloudlet/instances/{INSTANCE_ID}"
IMAGE = "/var/lib/cloudlet/images/2c4e6a8b-0d1f-4a3c-8e5b-7d9f1a3c5e7b.qcow2"


def basic_domain(**changes: object) -> Domain:
    domain = Domain(
        name=f"cloudlet-{INSTANCE_ID}",
        uuid=INSTANCE_ID,
        domain_type="qemu",
        memory_mb=512,
        vcpus=2,
        metadata=CloudletMetadata(
            INSTANCE_ID, "web1", "0b5e7c1d-2a3f-4e6d-9c8b-7a6f5e4d3c2b", "d3adb33fcafe0001"
        ),
        disks=(
            Disk(f"{FOLDER}/disk.qcow2", "qcow2", "vda", backing=(Layer(IMAGE, "qcow2"),)),
            Disk(f"{FOLDER}/seed.iso", "raw", "vdb", readonly=True, backing=()),
        ),
        interfaces=(Interface("cloudlet-0123456789", "52:54:00:12:34:56"),),
    )
    return dataclasses.replace(domain, **changes)


def test_domain_matches_the_golden_file() -> None:
    assert basic_domain().to_xml() + "\n" == (GOLDEN / "domain_basic.xml").read_text()


def attr(el: ET.Element, path: str, name: str) -> str | None:
    found = el.find(path)
    assert found is not None, f"no <{path}>"
    return found.get(name)


def test_golden_domain_has_what_libvirt_needs() -> None:
    root = ET.fromstring(basic_domain().to_xml())
    assert root.get("type") == "qemu"
    assert (root.findtext("memory"), attr(root, "memory", "unit")) == ("524288", "KiB")
    assert root.findtext("vcpu") == "2"
    vda, vdb = root.findall("devices/disk")
    assert (attr(vda, "target", "dev"), attr(vda, "target", "bus")) == ("vda", "virtio")
    assert attr(vda, "driver", "type") == "qcow2"
    assert vda.find("readonly") is None
    assert (attr(vdb, "target", "dev"), attr(vdb, "driver", "type")) == ("vdb", "raw")
    assert vdb.find("readonly") is not None
    assert attr(root, "devices/interface", "type") == "network"
    assert attr(root, "devices/interface/mac", "address") == "52:54:00:12:34:56"
    assert attr(root, "devices/serial", "type") == "pty"
    assert attr(root, "devices/console", "type") == "pty"
    assert attr(root, "devices/console/target", "type") == "serial"
    assert (attr(root, "devices/graphics", "type"), attr(root, "devices/graphics/listen", "type")) == (
        "vnc",
        "none",  # no TCP port: cloudlet reaches the screen through libvirt only
    )
    meta = root.find(f"metadata/{{{CLOUDLET_NS}}}instance")
    assert meta is not None and meta.findtext(f"{{{CLOUDLET_NS}}}id") == INSTANCE_ID
    assert root.find("cpu") is None  # host-passthrough is for KVM only


def test_kvm_domain_passes_the_host_cpu_through() -> None:
    cpu = ET.fromstring(basic_domain(domain_type="kvm").to_xml()).find("cpu")
    assert cpu is not None and cpu.get("mode") == "host-passthrough"


def test_domain_without_vnc_has_no_graphics() -> None:
    root = ET.fromstring(basic_domain(vnc=False).to_xml())
    assert root.find("devices/graphics") is None
    assert root.find("devices/serial") is not None


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"domain_type": "kvm", "machine": "q35", "memory_mb": 8192, "vcpus": 16},
        {"vnc": False, "interfaces": (), "disks": ()},
        {"metadata": CloudletMetadata(INSTANCE_ID, "web1", "ws", "")},
    ],
    ids=["basic", "kvm-q35-big", "bare", "no-deployment"],
)
def test_domain_round_trips(changes: dict[str, object]) -> None:
    original = basic_domain(**changes)
    assert Domain.from_xml(original.to_xml()) == original


SPECIAL = "a<b>&c\"d'e"


def test_special_characters_are_escaped_and_survive() -> None:
    original = basic_domain(
        name=SPECIAL,
        metadata=CloudletMetadata(INSTANCE_ID, SPECIAL, "ws&<>", SPECIAL),
        disks=(Disk(f"/srv/{SPECIAL}/disk.qcow2", "qcow2", "vda"),),
        interfaces=(Interface(f"net{SPECIAL}", "52:54:00:12:34:56"),),
    )
    text = original.to_xml()
    assert SPECIAL not in text  # every occurrence is escaped
    assert "<b>" not in text and "&c" not in text
    root = ET.fromstring(text)  # still well-formed
    assert root.findtext("name") == SPECIAL
    assert [e.tag for e in root] == [e.tag for e in ET.fromstring(basic_domain().to_xml())]
    assert Domain.from_xml(text) == original


def test_injection_attempt_in_a_name_stays_text() -> None:
    evil = "x</name><devices><disk type='file'><source file='/etc/shadow'/></disk></devices><name>y"
    root = ET.fromstring(basic_domain(name=evil).to_xml())
    assert root.findtext("name") == evil
    assert len(root.findall("devices/disk")) == 2
    assert all("shadow" not in (attr(d, "source", "file") or "") for d in root.findall("devices/disk"))


def test_metadata_element_parses_back() -> None:
    meta = CloudletMetadata(INSTANCE_ID, "web1", "ws-1", "dep-1")
    assert parse_metadata_element(ET.tostring(meta.to_element(), encoding="unicode")) == meta


def test_domain_without_cloudlet_metadata_is_refused() -> None:
    with pytest.raises(ValueError, match="no cloudlet metadata"):
        Domain.from_xml("<domain type='kvm'><name>someone-elses</name></domain>")


# -- networks ------------------------------------------------------------------------------------
HOSTS = (
    DhcpHostEntry("52:54:00:00:00:01", "10.99.0.2", "web1"),
    DhcpHostEntry("52:54:00:00:00:02", "10.99.0.3"),
)


def small_network(mode: str = "nat") -> Network:
    return Network("cloudlet-abc", "clbrabc", "10.99.0.0/29", "10.99.0.1", mode, HOSTS)


def test_network_dhcp_answers_only_reserved_hosts_with_room_for_all() -> None:
    root = ET.fromstring(small_network().to_xml())
    ip = root.find("ip")
    assert ip is not None and (ip.get("address"), ip.get("prefix")) == ("10.99.0.1", "29")
    ranges = root.findall("ip/dhcp/range")
    # the range sizes dnsmasq's lease table: every address after the gateway
    assert [(r.get("start"), r.get("end")) for r in ranges] == [("10.99.0.2", "10.99.0.6")]
    ns = "{http://libvirt.org/schemas/network/dnsmasq/1.0}"
    options = [o.get("value") for o in root.iter(f"{ns}option")]
    assert options == ["dhcp-ignore=tag:!known"]
    assert attr(root, "forward", "mode") == "nat"
    assert attr(root, "bridge", "name") == "clbrabc"


def test_network_has_the_host_entries() -> None:
    text = small_network().to_xml()
    hosts = ET.fromstring(text).findall("ip/dhcp/host")
    assert [(h.get("mac"), h.get("ip"), h.get("name")) for h in hosts] == [
        ("52:54:00:00:00:01", "10.99.0.2", "web1"),
        ("52:54:00:00:00:02", "10.99.0.3", None),
    ]
    assert dhcp_hosts_of(text) == [
        DhcpHostEntry("52:54:00:00:00:01", "10.99.0.2", "web1"),
        DhcpHostEntry("52:54:00:00:00:02", "10.99.0.3", ""),
    ]


def test_isolated_network_does_not_forward() -> None:
    assert ET.fromstring(small_network("isolated").to_xml()).find("forward") is None


@pytest.mark.parametrize("cidr", ["10.99.0.0/29", "10.98.0.0/28", "10.47.0.0/24", "172.16.0.0/16"])
def test_dhcp_spare_is_never_handed_out_by_ipam(cidr: str) -> None:
    """The last address stays out of IPAM (it was dnsmasq's spare for unknown clients)."""
    gateway = str(next(ipaddress.ip_network(cidr).hosts()))
    spare = Network("n", "b", cidr, gateway, "nat").spare_address
    row = NetworkRow(cidr=cidr, gateway=gateway)
    usable = usable_addresses(row)
    assert spare not in usable
    assert gateway not in usable
    assert ipaddress.ip_address(spare) in ipaddress.ip_network(cidr)
    assert len(usable) == ipaddress.ip_network(cidr).num_addresses - 4  # network, broadcast, gateway, spare


def test_snapshot_xml_saves_the_system_disk_and_memory_and_escapes_text() -> None:
    from cloudlet.drivers.libvirt.xml import DomainSnapshot

    doc = ET.fromstring(DomainSnapshot("3f1c", memory=True, description="</description><x>&").to_xml())
    assert doc.findtext("name") == "3f1c" and doc.findtext("description") == "</description><x>&"
    assert doc.find("memory").get("snapshot") == "internal"  # type: ignore[union-attr]
    disks = {d.get("name"): d.get("snapshot") for d in doc.iter("disk")}
    assert disks == {"vda": "internal", "vdb": "no"}  # the read-only raw seed cannot be snapshotted
    stopped = ET.fromstring(DomainSnapshot("3f1c", memory=False).to_xml())
    assert stopped.find("memory").get("snapshot") == "no" and stopped.find("description") is None  # type: ignore[union-attr]


def test_label_for_set_metadata_has_no_namespace_and_reads_back() -> None:
    label = CloudletMetadata("i-1", "web <&> 1", "ws-1", "dep-1")
    text = label.to_metadata_xml()
    assert "xmlns" not in text and text.startswith("<instance>")
    assert parse_metadata_element(text) == label


def test_room_for_vcpus_plugged_in_later_reads_back() -> None:
    meta = CloudletMetadata("i-1", "web", "ws-1")
    dom = Domain(name="d", uuid="u", domain_type="qemu", memory_mb=128, vcpus=1, metadata=meta, max_vcpus=4)
    vcpu = dom.to_element().find("vcpu")
    assert vcpu is not None and (vcpu.text, vcpu.get("current")) == ("4", "1")
    assert Domain.from_xml(dom.to_xml()) == dom
    flat = dataclasses.replace(dom, max_vcpus=1)  # no room: no current attribute at all
    assert flat.to_element().find("vcpu").attrib == {"placement": "static"}  # type: ignore[union-attr]


def room_to_grow() -> Domain:
    """A 256 MiB, 1 vCPU domain with room for 1 GiB and 2 vCPUs."""
    meta = CloudletMetadata("i-1", "web", "ws-1")
    return Domain(
        name="d",
        uuid="u",
        domain_type="qemu",
        memory_mb=256,
        vcpus=1,
        metadata=meta,
        max_vcpus=2,
        max_memory_mb=1024,
    )


def test_room_for_memory_plugged_in_later() -> None:
    dom = room_to_grow()
    root = dom.to_element()
    maximum = root.find("maxMemory")
    assert maximum is not None and (maximum.text, maximum.get("slots")) == (str(1024 * 1024), "16")
    cell = root.find("cpu/numa/cell")
    assert cell is not None and (cell.get("cpus"), cell.get("memory")) == ("0-1", str(256 * 1024))
    assert Domain.from_xml(dom.to_xml()) == dom
    assert ET.fromstring(MemoryDimm(128).to_xml()).findtext("target/size") == str(128 * 1024)


@pytest.mark.parametrize(
    ("memory", "host", "room"),
    [(128, 24576, None), (256, 24576, 1024), (512, 24576, 2048), (3000, 8192, 8192), (1000, 1000, None)],
)
def test_memory_room(memory: int, host: int, room: int | None) -> None:
    assert memory_room_mb(memory, host) == room


def test_a_resized_definition_folds_plugged_memory_and_keeps_its_room() -> None:
    dom = room_to_grow()
    root = dom.to_element()
    root.find("devices").append(ET.fromstring(MemoryDimm(128).to_xml()))  # type: ignore[union-attr]
    out = ET.fromstring(resized(to_string(root), vcpus=3, max_vcpus=3, memory_mb=512, max_memory_mb=2048))
    assert out.findall("devices/memory") == []
    assert (out.findtext("memory"), out.findtext("currentMemory")) == (str(512 * 1024),) * 2
    vcpu = out.find("vcpu")
    assert vcpu is not None and (vcpu.text, vcpu.get("current")) == ("3", None)
    assert [c.attrib for c in out.findall("cpu/numa/cell")] == [
        {"id": "0", "cpus": "0-2", "memory": str(512 * 1024), "unit": "KiB"}
    ]
    assert out.findtext("maxMemory") == str(2048 * 1024)
    small = ET.fromstring(resized(to_string(root), vcpus=1, max_vcpus=2, memory_mb=128, max_memory_mb=None))
    assert small.find("maxMemory") is None and small.find("cpu") is None  # no room: no NUMA node either
    assert Domain.from_element(small).memory_mb == 128
