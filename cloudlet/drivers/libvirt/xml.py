"""libvirt XML as typed Python objects (the virt-manager ``virtinst`` way).

Every document is built with ``xml.etree.ElementTree``: user-supplied values only ever land in
attributes and text nodes, where the builder escapes them. ``from_element`` reads back what
cloudlet wrote (used by the reconciler to recognise its own domains)."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace

CLOUDLET_NS = "https://cloudlet.dev/xmlns/libvirt/1"
ET.register_namespace("cloudlet", CLOUDLET_NS)
DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"
ET.register_namespace("dnsmasq", DNSMASQ_NS)


BALLOON_STATS_PERIOD = 5  # seconds between the guest's memory reports


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def to_string(el: ET.Element) -> str:
    ET.indent(el, space="  ")
    return ET.tostring(el, encoding="unicode")


@dataclass(frozen=True)
class CloudletMetadata:
    """cloudlet's label on a domain: which instance of which workspace it is."""

    instance_id: str
    name: str
    workspace_id: str
    deployment: str = ""  # which cloudlet deployment owns it: several may share one libvirtd

    def to_element(self, namespace: str = f"{{{CLOUDLET_NS}}}") -> ET.Element:
        el = ET.Element(f"{namespace}instance")
        _sub(el, f"{namespace}deployment", self.deployment)
        _sub(el, f"{namespace}id", self.instance_id)
        _sub(el, f"{namespace}name", self.name)
        _sub(el, f"{namespace}workspace", self.workspace_id)
        return el

    def to_metadata_xml(self) -> str:
        """The label for ``virDomainSetMetadata``, which wants it without a namespace: libvirt
        puts it in CLOUDLET_NS under the key given beside it."""
        return to_string(self.to_element(namespace=""))

    @classmethod
    def from_element(cls, el: ET.Element) -> CloudletMetadata:
        def text(tag: str) -> str:
            # Inside a domain document the children carry the namespace; virDomainGetMetadata
            # returns the element on its own, without it.
            return el.findtext(f"{{{CLOUDLET_NS}}}{tag}") or el.findtext(tag) or ""

        return cls(
            instance_id=text("id"),
            name=text("name"),
            workspace_id=text("workspace"),
            deployment=text("deployment"),
        )


@dataclass(frozen=True)
class Layer:
    """A read-only file under a disk in its backing chain, with its format."""

    path: str
    format: str  # "qcow2" or "raw"


@dataclass(frozen=True)
class Disk:
    """A disk, or (``device`` "cdrom") a CD-ROM drive; an empty ``path`` is a drive without media.
    ``boot_order`` gives the device a place in the boot order (then the domain lists no
    ``<os><boot>``: libvirt refuses the two together).

    ``backing``: the disk's whole backing chain, top first; ``()`` says it has none. Given, it is
    written as nested ``<backingStore>`` elements ending in an empty one, so libvirt opens exactly
    these files with these formats: it neither probes a format nor follows a backing file named
    inside an image (nor changes such a file's owner for QEMU). None says nothing (libvirt reads
    the chain from the files: only for files cloudlet made itself)."""

    path: str
    format: str  # "qcow2" or "raw"
    target: str  # "vda", "vdb"... ("hdc" for an IDE CD-ROM)
    bus: str = "virtio"
    readonly: bool = False
    device: str = "disk"  # "disk" | "cdrom"
    boot_order: int | None = None
    backing: tuple[Layer, ...] | None = None

    @classmethod
    def cdrom(
        cls, path: str, *, target: str = "hdc", bus: str = "ide", boot_order: int | None = None
    ) -> Disk:
        """A read-only CD-ROM drive holding the ISO at ``path``. IDE: the "pc" machine (i440fx) has
        an IDE controller built in, which SeaBIOS boots from and every installer's kernel knows."""
        return cls(
            path=path,
            format="raw",
            target=target,
            bus=bus,
            readonly=True,
            device="cdrom",
            boot_order=boot_order,
            backing=() if path else None,
        )

    def to_element(self) -> ET.Element:
        el = ET.Element("disk", type="file", device=self.device)
        if self.device == "disk":
            _sub(el, "driver", name="qemu", type=self.format, discard="unmap")
        else:
            _sub(el, "driver", name="qemu", type=self.format)
        if self.path:
            _sub(el, "source", file=self.path)
            if self.backing is not None:
                el.append(_backing_store(self.backing))
        _sub(el, "target", dev=self.target, bus=self.bus)
        if self.readonly:
            _sub(el, "readonly")
        if self.boot_order is not None:
            _sub(el, "boot", order=str(self.boot_order))
        return el

    def to_xml(self) -> str:
        return to_string(self.to_element())

    @classmethod
    def from_element(cls, el: ET.Element) -> Disk:
        driver, source, target = el.find("driver"), el.find("source"), el.find("target")
        boot = el.find("boot")
        return cls(
            path=source.get("file", "") if source is not None else "",
            format=driver.get("type", "raw") if driver is not None else "raw",
            target=target.get("dev", "") if target is not None else "",
            bus=target.get("bus", "virtio") if target is not None else "virtio",
            readonly=el.find("readonly") is not None,
            device=el.get("device", "disk"),
            boot_order=int(boot.get("order", "0")) if boot is not None else None,
            backing=_layers(el),
        )

    def ejected(self) -> Disk:
        """The same drive without media."""
        return replace(self, path="", backing=None)


def _backing_store(chain: tuple[Layer, ...]) -> ET.Element:
    """``<backingStore>`` for ``chain`` (top first), ending in the empty one that says "no more"."""
    if not chain:
        return ET.Element("backingStore")
    el = ET.Element("backingStore", type="file")
    _sub(el, "format", type=chain[0].format)
    _sub(el, "source", file=chain[0].path)
    el.append(_backing_store(chain[1:]))
    return el


def _layers(disk: ET.Element) -> tuple[Layer, ...] | None:
    """The backing chain of a ``<disk>`` element (None: it states none)."""
    store = disk.find("backingStore")
    if store is None:
        return None
    layers: list[Layer] = []
    while store is not None and store.find("source") is not None:
        fmt, source = store.find("format"), store.find("source")
        layers.append(
            Layer(
                path=source.get("file", "") if source is not None else "",
                format=fmt.get("type", "raw") if fmt is not None else "raw",
            )
        )
        store = store.find("backingStore")
    return tuple(layers)


def cdroms_of(domain_xml: str) -> list[Disk]:
    """The CD-ROM drives of a domain definition."""
    root = ET.fromstring(domain_xml)
    return [Disk.from_element(d) for d in root.findall("devices/disk[@device='cdrom']")]


@dataclass(frozen=True)
class Interface:
    network: str
    mac: str
    model: str = "virtio"

    def to_element(self) -> ET.Element:
        el = ET.Element("interface", type="network")
        _sub(el, "source", network=self.network)
        _sub(el, "mac", address=self.mac)
        _sub(el, "model", type=self.model)
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Interface:
        source, mac, model = el.find("source"), el.find("mac"), el.find("model")
        return cls(
            network=source.get("network", "") if source is not None else "",
            mac=mac.get("address", "") if mac is not None else "",
            model=model.get("type", "virtio") if model is not None else "virtio",
        )


MEMORY_SLOTS = 16  # DIMMs a running VM can take; each memory grow while it runs uses one
MEMORY_BLOCK_MB = 128  # what Linux onlines at a time on x86: plugged memory comes in these steps
# A guest's kernel pays at boot for the memory it may be given later: below this size a VM gets no
# room to grow while it runs (the tiny guest with 128 MiB runs out of memory at boot), above it
# the room is HOTPLUG_FACTOR times its memory.
MEMORY_HOTPLUG_MIN_MB = 256
MEMORY_HOTPLUG_FACTOR = 4


@dataclass(frozen=True)
class MemoryDimm:
    """Memory plugged into a running VM, on NUMA node 0."""

    size_mb: int

    def to_xml(self) -> str:
        el = ET.Element("memory", model="dimm")
        target = _sub(el, "target")
        _sub(target, "size", str(self.size_mb * 1024), unit="KiB")
        _sub(target, "node", "0")
        return to_string(el)


def memory_room_mb(memory_mb: int, host_mb: int) -> int | None:
    """How far a VM's memory can grow while it runs (None: not at all), in whole blocks."""
    if memory_mb < MEMORY_HOTPLUG_MIN_MB:
        return None
    most = min(host_mb, memory_mb * MEMORY_HOTPLUG_FACTOR) // MEMORY_BLOCK_MB * MEMORY_BLOCK_MB
    return most if most > memory_mb else None


def resized(domain_xml: str, *, vcpus: int, max_vcpus: int, memory_mb: int, max_memory_mb: int | None) -> str:
    """A stopped domain's definition with new vCPUs and memory: plugged DIMMs are folded into its
    base memory, and the vCPU maximum, the memory room and the NUMA node follow."""
    dom = ET.fromstring(domain_xml)
    devices = dom.find("devices")
    if devices is not None:
        for dimm in devices.findall("memory[@model='dimm']"):
            devices.remove(dimm)
    for tag in ("memory", "currentMemory"):
        el = dom.find(tag)
        if el is None:
            el = _sub(dom, tag)
        el.text, el.attrib = str(memory_mb * 1024), {"unit": "KiB"}
    vcpu = dom.find("vcpu")
    if vcpu is None:
        vcpu = _sub(dom, "vcpu")
    most = max(vcpus, max_vcpus)
    vcpu.text = str(most)
    vcpu.attrib = {"placement": "static", **({"current": str(vcpus)} if most > vcpus else {})}
    maximum, cpu = dom.find("maxMemory"), dom.find("cpu")
    if maximum is not None:
        dom.remove(maximum)
    numa = cpu.find("numa") if cpu is not None else None
    if cpu is not None and numa is not None:
        cpu.remove(numa)
        if not cpu.attrib and len(cpu) == 0:
            dom.remove(cpu)
    if max_memory_mb is not None and max_memory_mb > memory_mb:
        el = ET.Element("maxMemory", slots=str(MEMORY_SLOTS), unit="KiB")
        el.text = str(max_memory_mb * 1024)
        memory = dom.find("memory")
        dom.insert(list(dom).index(memory) if memory is not None else 0, el)
        cpu = dom.find("cpu")
        if cpu is None:
            cpu = ET.Element("cpu")
            anchor = dom.find("features")
            dom.insert(list(dom).index(anchor) + 1 if anchor is not None else len(dom), cpu)
        cells = _sub(cpu, "numa")
        _sub(cells, "cell", id="0", cpus=f"0-{most - 1}", memory=str(memory_mb * 1024), unit="KiB")
    return to_string(dom)


@dataclass(frozen=True)
class Graphics:
    """The VNC display, listening nowhere: QEMU opens no TCP port (a VNC server on loopback
    without a password let any local user watch and type on a tenant's screen) and no socket for
    it. cloudlet reaches it only through libvirt (``virDomainOpenGraphicsFD``), after its own
    authorization; screenshots and key presses go through libvirt too."""

    def to_element(self) -> ET.Element:
        el = ET.Element("graphics", type="vnc")
        _sub(el, "listen", type="none")
        return el


def vnc_on_network(graphics: ET.Element) -> bool:
    """Whether a ``<graphics>`` element is a VNC display listening on a TCP port: a ``<listen>``
    of type address or network, or none at all (libvirt then takes qemu.conf's vnc_listen)."""
    if graphics.get("type") != "vnc":
        return False
    listens = graphics.findall("listen")
    if not listens:
        return graphics.get("socket") is None
    return any(listen.get("type") in ("address", "network") for listen in listens)


def has_vnc_port(domain_xml: str) -> bool:
    """Whether a domain document has a VNC display on a TCP port."""
    return any(vnc_on_network(el) for el in ET.fromstring(domain_xml).findall("devices/graphics"))


def without_vnc_port(domain_xml: str) -> str | None:
    """The domain definition with each VNC display on a TCP port replaced by one listening
    nowhere (``Graphics``); None when it has no such display."""
    root = ET.fromstring(domain_xml)
    devices = root.find("devices")
    if devices is None:
        return None
    changed = False
    for index, el in enumerate(list(devices)):
        if el.tag == "graphics" and vnc_on_network(el):
            devices.remove(el)
            devices.insert(index, Graphics().to_element())
            changed = True
    return to_string(root) if changed else None


@dataclass(frozen=True)
class Domain:
    """A guest definition. ``domain_type`` is "kvm" with hardware acceleration, "qemu" for TCG."""

    name: str
    uuid: str
    domain_type: str
    memory_mb: int
    vcpus: int
    metadata: CloudletMetadata
    disks: tuple[Disk, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    machine: str = "pc"
    vnc: bool = True
    max_vcpus: int | None = None  # above ``vcpus``: room to plug vCPUs in while the VM runs
    max_memory_mb: int | None = None  # above ``memory_mb``: room to plug memory in (DIMMs)

    @property
    def memory_hotplug(self) -> bool:
        return self.max_memory_mb is not None and self.max_memory_mb > self.memory_mb

    def to_element(self) -> ET.Element:
        dom = ET.Element("domain", type=self.domain_type)
        _sub(dom, "name", self.name)
        _sub(dom, "uuid", self.uuid)
        _sub(dom, "metadata").append(self.metadata.to_element())
        if self.memory_hotplug:
            maximum = str((self.max_memory_mb or 0) * 1024)
            _sub(dom, "maxMemory", maximum, slots=str(MEMORY_SLOTS), unit="KiB")
        _sub(dom, "memory", str(self.memory_mb * 1024), unit="KiB")
        _sub(dom, "currentMemory", str(self.memory_mb * 1024), unit="KiB")
        if self.max_vcpus is not None and self.max_vcpus > self.vcpus:
            _sub(dom, "vcpu", str(self.max_vcpus), placement="static", current=str(self.vcpus))
        else:
            _sub(dom, "vcpu", str(self.vcpus), placement="static")
        os_el = _sub(dom, "os")
        _sub(os_el, "type", "hvm", arch="x86_64", machine=self.machine)
        if not any(d.boot_order for d in self.disks):
            _sub(os_el, "boot", dev="hd")
        features = _sub(dom, "features")
        _sub(features, "acpi")
        _sub(features, "apic")
        cpu = _sub(dom, "cpu", mode="host-passthrough", check="none") if self.domain_type == "kvm" else None
        if self.memory_hotplug:  # plugged memory goes to a NUMA node: the guest has one, with every vCPU
            cpu = cpu if cpu is not None else _sub(dom, "cpu")
            last = max(self.vcpus, self.max_vcpus or 0) - 1
            cells = _sub(cpu, "numa")
            _sub(cells, "cell", id="0", cpus=f"0-{last}", memory=str(self.memory_mb * 1024), unit="KiB")
        _sub(dom, "clock", offset="utc")
        _sub(dom, "on_poweroff", "destroy")
        _sub(dom, "on_reboot", "restart")
        _sub(dom, "on_crash", "destroy")
        devices = _sub(dom, "devices")
        for disk in self.disks:
            devices.append(disk.to_element())
        for nic in self.interfaces:
            devices.append(nic.to_element())
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "target", port="0")
        console = _sub(devices, "console", type="pty")
        _sub(console, "target", type="serial", port="0")
        if self.vnc:
            devices.append(Graphics().to_element())
            video = _sub(devices, "video")
            _sub(video, "model", type="vga", vram="16384", heads="1")
        # Entropy for the guest from the start: without it key generation stalls early in boot.
        rng = _sub(devices, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
        # The balloon reports the guest's own memory use (free, usable) every few seconds: what
        # the metrics show. cloudlet never inflates it; memory changes go through DIMMs.
        balloon = _sub(devices, "memballoon", model="virtio")
        _sub(balloon, "stats", period=str(BALLOON_STATS_PERIOD))
        return dom

    def to_xml(self) -> str:
        return to_string(self.to_element())

    @classmethod
    def from_element(cls, dom: ET.Element) -> Domain:
        meta = dom.find(f"metadata/{{{CLOUDLET_NS}}}instance")
        if meta is None:
            raise ValueError("domain carries no cloudlet metadata")
        os_type = dom.find("os/type")
        vcpu = dom.find("vcpu")
        most = int(vcpu.text or "1") if vcpu is not None else 1
        current = int(vcpu.get("current", most)) if vcpu is not None else 1
        return cls(
            name=dom.findtext("name", ""),
            uuid=dom.findtext("uuid", ""),
            domain_type=dom.get("type", "qemu"),
            memory_mb=int(dom.findtext("memory", "0")) // 1024,
            vcpus=current,
            max_vcpus=most if most > current else None,
            max_memory_mb=int(dom.findtext("maxMemory", "0")) // 1024 or None,
            metadata=CloudletMetadata.from_element(meta),
            disks=tuple(Disk.from_element(d) for d in dom.findall("devices/disk")),
            interfaces=tuple(Interface.from_element(i) for i in dom.findall("devices/interface")),
            machine=os_type.get("machine", "pc") if os_type is not None else "pc",
            vnc=dom.find("devices/graphics[@type='vnc']") is not None,
        )

    @classmethod
    def from_xml(cls, text: str) -> Domain:
        return cls.from_element(ET.fromstring(text))


def parse_metadata_element(text: str) -> CloudletMetadata:
    """Read the element libvirt returns for ``virDomainGetMetadata(ELEMENT, CLOUDLET_NS)``."""
    return CloudletMetadata.from_element(ET.fromstring(text))


@dataclass(frozen=True)
class DhcpHostEntry:
    mac: str
    ip: str
    name: str = ""

    def to_element(self) -> ET.Element:
        el = ET.Element("host", mac=self.mac, ip=self.ip)
        if self.name:
            el.set("name", self.name)
        return el

    def to_xml(self) -> str:
        return ET.tostring(self.to_element(), encoding="unicode")


@dataclass(frozen=True)
class Network:
    """A libvirt virtual network. DHCP answers only the reserved MAC-to-IP hosts that cloudlet's
    IPAM writes; unknown clients get nothing, so dnsmasq never gives away an address."""

    name: str
    bridge: str
    cidr: str
    gateway: str
    mode: str  # "nat" | "isolated"
    hosts: tuple[DhcpHostEntry, ...] = field(default_factory=tuple)

    @property
    def spare_address(self) -> str:
        return str(ipaddress.ip_network(self.cidr).broadcast_address - 1)

    def to_element(self) -> ET.Element:
        net = ipaddress.ip_network(self.cidr)
        el = ET.Element("network")
        _sub(el, "name", self.name)
        if self.mode == "nat":
            _sub(el, "forward", mode="nat")
        _sub(el, "bridge", name=self.bridge, stp="on", delay="0")
        ip = _sub(el, "ip", address=self.gateway, prefix=str(net.prefixlen))
        dhcp = _sub(ip, "dhcp")
        # libvirt sizes dnsmasq's lease table from the range: a range of every address leaves
        # room for a lease per VM (a one-address range refused the second VM's DHCP request
        # while the first held its lease), and dnsmasq answers only the MACs cloudlet reserved,
        # so it never hands out an address that IPAM may allocate later.
        first = ipaddress.ip_address(self.gateway) + 1
        _sub(dhcp, "range", start=str(first), end=self.spare_address)
        for host in self.hosts:
            dhcp.append(host.to_element())
        options = _sub(el, f"{{{DNSMASQ_NS}}}options")
        _sub(options, f"{{{DNSMASQ_NS}}}option", value="dhcp-ignore=tag:!known")
        return el

    def to_xml(self) -> str:
        return to_string(self.to_element())


def dhcp_hosts_of(network_xml: str) -> list[DhcpHostEntry]:
    root = ET.fromstring(network_xml)
    return [
        DhcpHostEntry(mac=h.get("mac", ""), ip=h.get("ip", ""), name=h.get("name", ""))
        for h in root.findall("ip/dhcp/host")
    ]


@dataclass(frozen=True)
class DomainSnapshot:
    """An internal qcow2 snapshot of the system disk ``vda``, with the guest's memory when
    ``memory`` (the domain runs). The seed disk is read-only raw: it is left out."""

    name: str
    memory: bool
    description: str = ""
    disk: str = "vda"
    skipped: tuple[str, ...] = ("vdb",)

    def to_xml(self) -> str:
        root = ET.Element("domainsnapshot")
        _sub(root, "name", self.name)
        if self.description:
            _sub(root, "description", self.description)
        _sub(root, "memory", snapshot="internal" if self.memory else "no")
        disks = _sub(root, "disks")
        _sub(disks, "disk", name=self.disk, snapshot="internal")
        for target in self.skipped:
            _sub(disks, "disk", name=target, snapshot="no")
        return to_string(root)
