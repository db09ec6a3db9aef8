"""libvirt storage XML as typed objects: pools, volumes and the disk element that attaches a
volume to a domain. Built with ``xml.etree`` like ``xml.py``: user-supplied values only land in
attributes and text nodes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from cloudlet.drivers.libvirt.xml import Disk, _sub, to_string

POOL_KINDS = ("dir", "netfs")
SERIAL_LENGTH = 20  # what virtio-blk passes to the guest


@dataclass(frozen=True)
class StoragePool:
    """A ``dir`` pool (a folder on the host) or a ``netfs`` pool (an NFS export libvirt mounts
    at ``path``)."""

    name: str
    kind: str
    path: str
    source_host: str | None = None
    source_path: str | None = None
    # QEMU (running as its own user) reaches the volumes in it by its group: 0710 with ``group``
    # (see cloudlet.filemodes); nobody else may list it
    mode: str = "0700"
    owner: int | None = None
    group: int | None = None

    def to_element(self) -> ET.Element:
        if self.kind not in POOL_KINDS:
            raise ValueError(f"unknown pool kind {self.kind!r}")
        el = ET.Element("pool", type=self.kind)
        _sub(el, "name", self.name)
        if self.kind == "netfs":
            if not self.source_host or not self.source_path:
                raise ValueError("a netfs pool needs a source host and path")
            source = _sub(el, "source")
            _sub(source, "host", name=self.source_host)
            _sub(source, "dir", path=self.source_path)
            _sub(source, "format", type="nfs")
        target = _sub(el, "target")
        _sub(target, "path", self.path)
        permissions = _sub(target, "permissions")
        _sub(permissions, "mode", self.mode)
        if self.owner is not None:
            _sub(permissions, "owner", str(self.owner))
        if self.group is not None:
            _sub(permissions, "group", str(self.group))
        return el

    def to_xml(self) -> str:
        return to_string(self.to_element())

    @classmethod
    def from_xml(cls, text: str) -> StoragePool:
        el = ET.fromstring(text)
        host, folder = el.find("source/host"), el.find("source/dir")
        return cls(
            name=el.findtext("name", ""),
            kind=el.get("type", ""),
            path=el.findtext("target/path", ""),
            source_host=host.get("name") if host is not None else None,
            source_path=folder.get("path") if folder is not None else None,
            mode=el.findtext("target/permissions/mode", "0700"),
            owner=_number(el.findtext("target/permissions/owner")),
            group=_number(el.findtext("target/permissions/group")),
        )


def _number(text: str | None) -> int | None:
    return None if text is None or text == "-1" else int(text)


@dataclass(frozen=True)
class StorageVolume:
    """A qcow2 volume of ``capacity`` bytes; qcow2 allocates on write, so it starts small."""

    name: str
    capacity: int
    format: str = "qcow2"

    def to_element(self) -> ET.Element:
        el = ET.Element("volume", type="file")
        _sub(el, "name", self.name)
        _sub(el, "capacity", str(self.capacity), unit="bytes")
        _sub(el, "allocation", "0", unit="bytes")
        target = _sub(el, "target")
        _sub(target, "format", type=self.format)
        permissions = _sub(target, "permissions")
        _sub(permissions, "mode", "0600")
        return el

    def to_xml(self) -> str:
        return to_string(self.to_element())


def serial_of(volume_id: str) -> str:
    """The serial number the guest sees for a volume (``/sys/block/vdX/serial``,
    ``/dev/disk/by-id/virtio-<serial>``): its id without dashes, cut to what virtio-blk carries."""
    return volume_id.replace("-", "")[:SERIAL_LENGTH]


@dataclass(frozen=True)
class VolumeDisk:
    """The ``<disk>`` that attaches a volume file as ``target`` of a domain, with the volume's
    serial so the guest can tell its disks apart whatever names its kernel gives them."""

    path: str
    target: str
    serial: str

    def to_element(self) -> ET.Element:
        el = Disk(path=self.path, format="qcow2", target=self.target).to_element()
        _sub(el, "serial", self.serial)
        return el

    def to_xml(self) -> str:
        return to_string(self.to_element())


def disk_by_target(domain_xml: str, target: str) -> str | None:
    """The ``<disk>`` element of a domain document whose target is ``target``, as XML, or None."""
    for disk in ET.fromstring(domain_xml).findall("devices/disk"):
        found = disk.find("target")
        if found is not None and found.get("dev") == target:
            return ET.tostring(disk, encoding="unicode")
    return None


def disk_targets(domain_xml: str) -> set[str]:
    """Every disk target (vda, vdb...) a domain document has."""
    root = ET.fromstring(domain_xml)
    return {t.get("dev", "") for t in root.findall("devices/disk/target")}
