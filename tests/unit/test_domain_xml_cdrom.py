"""The CD-ROM of an ISO install in libvirt XML: a golden domain, boot order, eject, round trips."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

from cloudlet.drivers.libvirt.driver import _disks
from cloudlet.drivers.libvirt.xml import Disk, Domain, cdroms_of
from tests.unit.test_domain_xml import FOLDER, GOLDEN, basic_domain

ISO = "/var/lib/cloudlet/images/5a0c2e4f-1b3d-4c5e-9f70-8a9b0c1d2e3f.iso"


def iso_domain() -> Domain:
    return basic_domain(
        disks=_disks(Path(f"{FOLDER}/disk.qcow2"), Path(f"{FOLDER}/seed.iso"), Path(ISO), None)
    )


def test_iso_install_domain_matches_the_golden_file() -> None:
    assert iso_domain().to_xml() + "\n" == (GOLDEN / "domain_iso_install.xml").read_text()


def boot_orders(root: ET.Element) -> dict[str, str | None]:
    """``device:target`` of each disk -> its boot order."""
    found: dict[str, str | None] = {}
    for disk in root.findall("devices/disk"):
        target, boot = disk.find("target"), disk.find("boot")
        assert target is not None
        found[f"{disk.get('device')}:{target.get('dev')}"] = boot.get("order") if boot is not None else None
    return found


def test_cdrom_boots_first_then_the_disk_with_no_os_boot_element() -> None:
    root = ET.fromstring(iso_domain().to_xml())
    assert root.find("os/boot") is None  # libvirt refuses <os><boot> beside per-device orders
    order = boot_orders(root)
    assert order == {"cdrom:hdc": "1", "disk:vda": "2", "disk:vdb": None}
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom is not None
    assert cdrom.find("source").get("file") == ISO  # type: ignore[union-attr]
    assert cdrom.find("target").get("bus") == "ide"  # type: ignore[union-attr]
    assert cdrom.find("readonly") is not None
    assert cdrom.find("driver").get("discard") is None  # type: ignore[union-attr]


def test_a_disk_vm_keeps_os_boot_hd() -> None:
    root = ET.fromstring(basic_domain().to_xml())
    assert root.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]
    assert root.find("devices/disk/boot") is None


def test_ejected_drive_has_no_source_but_keeps_its_place() -> None:
    drive = Disk.cdrom(ISO, boot_order=1).ejected()
    el = ET.fromstring(drive.to_xml())
    assert el.get("device") == "cdrom"
    assert el.find("source") is None
    assert el.find("target").get("dev") == "hdc"  # type: ignore[union-attr]
    assert el.find("boot").get("order") == "1"  # type: ignore[union-attr]


def test_cdroms_are_found_and_round_trip() -> None:
    text = iso_domain().to_xml()
    assert cdroms_of(text) == [Disk.cdrom(ISO, boot_order=1)]
    assert Domain.from_xml(text) == iso_domain()
    ejected = dataclasses.replace(iso_domain(), disks=(*iso_domain().disks[:2], Disk.cdrom("", boot_order=1)))
    assert cdroms_of(ejected.to_xml()) == [Disk.cdrom("", boot_order=1)]
    assert cdroms_of(basic_domain().to_xml()) == []
