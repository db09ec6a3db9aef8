"""VMs on libvirt/QEMU: the ComputeDriver and NetworkDriver contracts."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from cloudlet import filemodes
from cloudlet.config import Accelerator
from cloudlet.drivers import qemu_img
from cloudlet.drivers.base import (
    ComputeDriver,
    ConsoleStream,
    DhcpHost,
    DriverCapabilities,
    DriverInfo,
    HostResources,
    InstanceSpec,
    InstanceStats,
    InstanceStatus,
    NetworkDriver,
    NetworkSpec,
    PowerState,
    StateCallback,
)
from cloudlet.drivers.libvirt import console, stats, xml
from cloudlet.drivers.libvirt.guest import EVENT_MAP, STATE_MAP, domain_name, instance_id_of
from cloudlet.drivers.libvirt.host import LibvirtHost, choose_domain_type
from cloudlet.drivers.libvirt.storage import LibvirtStorage
from cloudlet.errors import Conflict, DriverError, Invalid, InvalidState, NotFound

log = logging.getLogger(__name__)
T = TypeVar("T")

NETWORK_PREFIX = "cloudlet-"

GIB = 1024**3
_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)
_UPDATE_FLAGS = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG


class LibvirtDriver(ComputeDriver, NetworkDriver, LibvirtStorage):
    """Each instance is a domain named ``cloudlet-<instance id>`` whose UUID is the instance id,
    labelled with cloudlet metadata, with its files in ``<instances_dir>/<instance id>/``.
    Storage pools and volumes come from ``LibvirtStorage`` (storage.py)."""

    name = "libvirt"
    capabilities = DriverCapabilities(
        vnc_console=True, serial_console=True, pause=True, snapshots=True, iso_install=True
    )

    def __init__(
        self, uri: str, instances_dir: Path, deployment: str, accelerator: Accelerator = Accelerator.AUTO
    ) -> None:
        self.host = LibvirtHost(uri)
        self.deployment = deployment
        self.instances_dir = instances_dir
        self.domain_type = choose_domain_type(accelerator)
        self._host_size: HostResources | None = None
        self._cpu = stats.CpuMeter()
        self._sharing: filemodes.Sharing | None = None
        self.host.on_connect(self._close_vnc_ports)

    # -- health and host -------------------------------------------------------------------------
    def info(self) -> DriverInfo:
        accel = "kvm" if self.domain_type == "kvm" else "tcg"
        try:
            version = self.host.call("version", lambda c: c.getLibVersion())
        except DriverError as err:
            return DriverInfo(self.name, None, ok=False, error=err.detail, details={"accelerator": accel})
        major, minor, micro = version // 1_000_000, version // 1000 % 1000, version % 1000
        return DriverInfo(self.name, f"{major}.{minor}.{micro}", ok=True, details={"accelerator": accel})

    def host_resources(self) -> HostResources:
        def read(c: libvirt.virConnect) -> HostResources:
            info = c.getInfo()
            stats = c.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
            available_kib = stats.get("free", 0) + stats.get("buffers", 0) + stats.get("cached", 0)
            return HostResources(
                cpus=info[2],
                memory_total_mb=stats.get("total", 0) // 1024,
                memory_available_mb=available_kib // 1024,
            )

        return self.host.call("reading host resources", read)

    def _host(self) -> HostResources:
        """The host's CPUs and memory, read once: they bound how far a VM grows while it runs."""
        if self._host_size is None:
            self._host_size = self.host_resources()
        return self._host_size

    def _host_cpus(self) -> int:
        return self._host().cpus

    def _memory_room(self, memory_mb: int) -> int | None:
        """How far a VM's memory can grow while it runs (see ``xml.memory_room_mb``)."""
        return xml.memory_room_mb(memory_mb, self._host().memory_total_mb)

    def hypervisor_identity(self) -> tuple[int, int] | None:
        return self.host.dac_label(self.domain_type)

    def _folder_sharing(self) -> filemodes.Sharing:
        """How an instance's folder is opened to QEMU (its user's group may traverse it)."""
        if self._sharing is None:
            self._sharing = filemodes.Sharing.for_hypervisor(self.hypervisor_identity())
        return self._sharing

    def _close_vnc_ports(self, conn: libvirt.virConnect) -> None:
        """On each connection: this deployment's VMs that an older version gave a VNC display on a
        TCP port lose it (``console.close_vnc_port``). Other domains are never touched."""
        try:
            domains = conn.listAllDomains(0)
        except libvirt.libvirtError as err:
            log.error("listing domains to close VNC ports: %s", err.get_error_message())
            return
        for dom in domains:
            try:
                if instance_id_of(dom.name()) is None or _deployment_of(dom) != self.deployment:
                    continue
                done = console.close_vnc_port(dom)
            except libvirt.libvirtError as err:
                log.error("closing the VNC port of %s: %s", dom.name(), err.get_error_message())
                continue
            if done:
                log.warning("VM %s had a VNC display on a TCP port: %s", dom.name(), "; ".join(done))

    # -- instances -------------------------------------------------------------------------------
    def _dir(self, instance_id: str) -> Path:
        return self.instances_dir / str(uuid.UUID(instance_id))

    def _domain(self, conn: libvirt.virConnect, instance_id: str) -> libvirt.virDomain:
        return conn.lookupByName(domain_name(instance_id))

    def create(self, spec: InstanceSpec) -> None:
        if spec.install_media is not None:
            self._build(spec, lambda disk: qemu_img.create_blank(disk, spec.disk_gb * GIB), None)
            return
        if spec.image_path is None or spec.image_format is None:
            raise Invalid("a VM needs a base image", code="image_required")
        base, fmt = spec.image_path, spec.image_format
        self._build(
            spec, lambda disk: qemu_img.create_overlay(disk, base, fmt, spec.disk_gb * GIB), (base, fmt)
        )

    def clone(
        self, source_id: str, spec: InstanceSpec, *, linked: bool, snapshot_id: str | None = None
    ) -> None:
        if linked and (spec.image_path is None or spec.image_format is None):
            raise Invalid("a linked clone needs the base image", code="image_required")
        source = self._dir(source_id) / "disk.qcow2"
        if not source.exists():
            raise NotFound(f"instance {source_id} has no disk", code="backend_not_found")
        backing = (
            (spec.image_path, spec.image_format) if linked and spec.image_path and spec.image_format else None
        )

        def copy(disk: Path) -> None:
            qemu_img.convert(source, disk, "qcow2", backing=backing, snapshot=snapshot_id)
            # a snapshot from before a grow is smaller than the VM's disk now
            if qemu_img.info(disk, "qcow2").virtual_size < spec.disk_gb * GIB:
                qemu_img.grow(disk, spec.disk_gb * GIB)

        self._build(spec, copy, backing)

    def _build(
        self, spec: InstanceSpec, make_disk: Callable[[Path], None], base: tuple[Path, str] | None
    ) -> None:
        """Make the instance's folder, its disk (by ``make_disk``, on the image ``base`` (path,
        format) or on nothing), its seed and its definition; on failure remove what was made."""
        from cloudlet.drivers.libvirt.seed import build_nocloud_seed

        folder = self._dir(spec.id)
        disk, seed = folder / "disk.qcow2", folder / "seed.iso"
        with contextlib.ExitStack() as undo:
            filemodes.make_shared_dir(folder, self._folder_sharing())
            undo.callback(shutil.rmtree, folder, ignore_errors=True)
            make_disk(disk)
            build_nocloud_seed(
                seed,
                instance_id=spec.id,
                hostname=spec.hostname,
                ssh_keys=spec.ssh_keys,
                user_data=spec.user_data,
                network_config=spec.network_config,
            )
            domain = xml.Domain(
                name=domain_name(spec.id),
                uuid=spec.id,
                domain_type=self.domain_type,
                memory_mb=spec.memory_mb,
                vcpus=spec.cpus,
                max_vcpus=max(spec.cpus, self._host_cpus()),
                max_memory_mb=self._memory_room(spec.memory_mb),
                metadata=xml.CloudletMetadata(spec.id, spec.name, spec.workspace_id, self.deployment),
                disks=_disks(disk, seed, spec.install_media, base),
                interfaces=tuple(xml.Interface(network=n.network, mac=n.mac) for n in spec.nics),
            )
            self.host.call("defining domain", lambda c: c.defineXML(domain.to_xml()))
            undo.pop_all()

    def start(self, instance_id: str) -> None:
        def run(c: libvirt.virConnect) -> None:
            dom = self._domain(c, instance_id)
            if not dom.isActive():
                dom.create()
            elif dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()

        self.host.call("starting domain", run)

    def stop(self, instance_id: str, *, force: bool = False, timeout: float = 60.0) -> None:
        if not force and self._is_active(instance_id):
            with contextlib.suppress(NotFound):
                self.host.call("shutting down domain", lambda c: self._domain(c, instance_id).shutdown())
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._is_active(instance_id):
                time.sleep(0.25)
        if self._is_active(instance_id):
            self.host.call("stopping domain", lambda c: _destroy_if_active(self._domain(c, instance_id)))

    def _is_active(self, instance_id: str) -> bool:
        return bool(self.host.call("reading domain", lambda c: self._domain(c, instance_id).isActive()))

    def reboot(self, instance_id: str) -> None:
        self.host.call("rebooting domain", lambda c: self._domain(c, instance_id).reboot(0))

    def resize(
        self,
        instance_id: str,
        *,
        cpus: int | None = None,
        memory_mb: int | None = None,
        disk_gb: int | None = None,
    ) -> None:
        def change(c: libvirt.virConnect) -> None:
            dom = self._domain(c, instance_id)
            if dom.isActive():
                _plug(dom, cpus, memory_mb)
                return
            current = xml.Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            new_cpus, new_memory = cpus or current.vcpus, memory_mb or _memory_mb(dom)
            c.defineXML(
                xml.resized(
                    dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE),
                    vcpus=new_cpus,
                    max_vcpus=max(new_cpus, self._host_cpus()),
                    memory_mb=new_memory,
                    max_memory_mb=self._memory_room(new_memory),
                )
            )

        if cpus or memory_mb:
            self.host.call("resizing domain", change)
        if disk_gb:
            disk = self._dir(instance_id) / "disk.qcow2"

            def grow(c: libvirt.virConnect) -> None:
                dom = self._domain(c, instance_id)
                if dom.isActive():  # online: QEMU grows the file and tells the guest
                    dom.blockResize("vda", disk_gb * GIB, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                else:
                    qemu_img.grow(disk, disk_gb * GIB)

            self.host.call("growing disk", grow)

    def create_snapshot(self, instance_id: str, snapshot_id: str, *, description: str = "") -> bool:
        def run(c: libvirt.virConnect) -> bool:
            dom = self._domain(c, instance_id)
            running = bool(dom.isActive())
            snap = xml.DomainSnapshot(name=snapshot_id, memory=running, description=description)
            dom.snapshotCreateXML(snap.to_xml(), 0)
            return running

        return bool(self.host.call("snapshotting domain", run))

    def revert_snapshot(self, instance_id: str, snapshot_id: str) -> None:
        def run(c: libvirt.virConnect) -> None:
            dom = self._domain(c, instance_id)
            dom.revertToSnapshot(dom.snapshotLookupByName(snapshot_id), 0)
            try:  # a snapshot taken under an older version brings its VNC port back
                console.close_vnc_port(dom)
            except libvirt.libvirtError as err:
                log.error("closing the VNC port of %s: %s", dom.name(), err.get_error_message())

        self.host.call("reverting to snapshot", run)

    def delete_snapshot(self, instance_id: str, snapshot_id: str) -> None:
        def run(c: libvirt.virConnect) -> None:
            dom = self._domain(c, instance_id)
            dom.snapshotLookupByName(snapshot_id).delete(0)

        with contextlib.suppress(NotFound):
            self.host.call("deleting snapshot", run)

    def export_disk(self, instance_id: str, dest: Path) -> None:
        if self._is_active(instance_id):
            raise Conflict("the VM runs: stop it before copying its disk", code="instance_running")
        qemu_img.convert(self._dir(instance_id) / "disk.qcow2", dest, "qcow2")

    def eject_media(self, instance_id: str) -> None:
        def run(c: libvirt.virConnect) -> None:
            dom = self._domain(c, instance_id)
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE
            if dom.isActive():  # a guest that locked the tray is overruled (FORCE)
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            for drive in xml.cdroms_of(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)):
                if drive.path:
                    dom.updateDeviceFlags(drive.ejected().to_xml(), flags)

        self.host.call("ejecting the CD-ROM", run)

    def rename(self, instance_id: str, name: str) -> None:
        def run(c: libvirt.virConnect) -> None:
            dom = self._domain(c, instance_id)
            label = _label_of(dom)
            if label is None:
                raise NotFound(f"domain of {instance_id} carries no cloudlet label", code="backend_not_found")
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            new = dataclasses.replace(label, name=name).to_metadata_xml()
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, new, "cloudlet", xml.CLOUDLET_NS, flags)

        self.host.call("relabelling domain", run)

    # -- consoles --------------------------------------------------------------------------------
    def _on_running(
        self, what: str, instance_id: str, fn: Callable[[libvirt.virConnect, libvirt.virDomain], T]
    ) -> T:
        """``fn(conn, domain)`` on a running domain; 409 ``instance_not_running`` otherwise, also
        when it stops in between."""

        def run(c: libvirt.virConnect) -> T:
            dom = self._domain(c, instance_id)
            console.require_running(dom, instance_id)
            try:
                return fn(c, dom)
            except libvirt.libvirtError as err:
                stopped = console.stopped_meanwhile(err, instance_id)
                if stopped is None:
                    raise  # host.call translates it
                raise stopped from err

        return self.host.call(what, run)

    def open_serial_console(self, instance_id: str) -> ConsoleStream:
        return self._on_running("opening the serial console", instance_id, console.SerialConsole.open)

    def open_vnc(self, instance_id: str) -> ConsoleStream:
        return self._on_running(
            "connecting to the VNC server", instance_id, lambda _c, dom: console.VncConnection.open(dom)
        )

    def send_keys(self, instance_id: str, chords: Sequence[tuple[int, ...]]) -> None:
        self._on_running("sending keys", instance_id, lambda _c, dom: console.send_chords(dom, chords))

    def screenshot(self, instance_id: str) -> bytes:
        return self._on_running("taking a screenshot", instance_id, console.screenshot_png)

    # -- metrics ---------------------------------------------------------------------------------
    def stats(self, instance_id: str) -> InstanceStats:
        """One ``domainListGetStats`` record (CPU, balloon, vCPU, interface and block groups) per
        reading. ``cpu_percent`` is of all the VM's vCPUs (100 = every vCPU busy; not `docker
        stats`' 100-per-CPU), measured since this driver's previous reading of the VM (a first
        reading takes two records 0.2 s apart). Memory: see ``stats.memory_of``. Network and
        block bytes are summed over the VM's interfaces and disks. ``pids`` is always 0: a guest's
        processes are not visible from the host. 409 ``instance_not_running`` unless it runs."""

        def read() -> dict[str, Any]:
            def one(c: libvirt.virConnect, dom: libvirt.virDomain) -> dict[str, Any]:
                got = c.domainListGetStats([dom], stats.STATS_FLAGS)
                record: dict[str, Any] = dict(got[0][1]) if got else {}
                if "cpu.time" not in record:  # it stopped between the check and the call
                    raise InvalidState(f"VM {instance_id} is not running", code="instance_not_running")
                return record

            return self._on_running("reading domain stats", instance_id, one)

        record, percent = self._cpu.measure(instance_id, read)
        return stats.parse(record, percent, datetime.now(UTC))

    def pause(self, instance_id: str) -> None:
        self.host.call("pausing domain", lambda c: self._domain(c, instance_id).suspend())

    def resume(self, instance_id: str) -> None:
        self.host.call("resuming domain", lambda c: self._domain(c, instance_id).resume())

    def delete(self, instance_id: str) -> None:
        def run(c: libvirt.virConnect) -> None:
            dom = self._domain(c, instance_id)
            _destroy_if_active(dom)
            # Internal snapshots live inside every disk, volumes included: the volumes outlive the
            # VM, so their share of its snapshots goes now (undefining drops only the metadata).
            for snap in dom.listAllSnapshots(0):
                try:
                    snap.delete(0)
                except libvirt.libvirtError as err:
                    log.warning("deleting snapshot %s of %s: %s", snap.getName(), instance_id, err)
            dom.undefineFlags(_UNDEFINE_FLAGS)

        self._cpu.forget(instance_id)
        with contextlib.suppress(NotFound):
            self.host.call("deleting domain", run)
        shutil.rmtree(self._dir(instance_id), ignore_errors=True)

    def state(self, instance_id: str) -> PowerState:
        code = self.host.call("reading domain state", lambda c: self._domain(c, instance_id).state()[0])
        return STATE_MAP.get(code, PowerState.UNKNOWN)

    def list_instances(self) -> list[InstanceStatus]:
        def run(c: libvirt.virConnect) -> list[InstanceStatus]:
            found = []
            for dom in c.listAllDomains(0):
                instance_id = instance_id_of(dom.name())
                if instance_id is None or _deployment_of(dom) != self.deployment:
                    continue
                found.append(InstanceStatus(instance_id, STATE_MAP.get(dom.state()[0], PowerState.UNKNOWN)))
            return found

        return self.host.call("listing domains", run)

    def residue(self) -> list[str]:
        if not self.instances_dir.is_dir():
            return []
        return [p.name for p in self.instances_dir.iterdir() if p.is_dir()]

    def watch(self, callback: StateCallback) -> None:
        def on_event(_conn: Any, dom: libvirt.virDomain, event: int, _detail: int, _opaque: Any) -> None:
            # Runs on libvirt's event thread: only translate and hand over, never block here.
            instance_id = instance_id_of(dom.name())
            state = EVENT_MAP.get(event)
            if instance_id is not None and state is not None:
                callback(instance_id, state)

        self.host.on_connect(
            lambda c: c.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None)
        )

    def close(self) -> None:
        self.host.close()

    # -- networks --------------------------------------------------------------------------------
    def ensure_network(self, spec: NetworkSpec) -> None:
        hosts = tuple(xml.DhcpHostEntry(h.mac, h.ip, h.name) for h in spec.dhcp_hosts)
        doc = xml.Network(spec.backend_name, spec.bridge, spec.cidr, spec.gateway, spec.mode, hosts)

        def run(c: libvirt.virConnect) -> None:
            try:
                net = c.networkLookupByName(spec.backend_name)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
                net = c.networkDefineXML(doc.to_xml())
                try:
                    net.create()
                    net.setAutostart(True)
                except libvirt.libvirtError:
                    _remove_network(net)
                    raise
                return
            if not net.isActive():
                net.create()
            wanted = {(h.mac, h.ip) for h in hosts}
            present = {(h.mac, h.ip) for h in xml.dhcp_hosts_of(net.XMLDesc(0))}
            for h in hosts:
                if (h.mac, h.ip) not in present:
                    _update_host(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, h)
            for mac, ip in present - wanted:
                _update_host(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, xml.DhcpHostEntry(mac, ip))

        self.host.call(f"setting up network {spec.backend_name}", run)

    def delete_network(self, backend_name: str) -> None:
        with contextlib.suppress(NotFound):
            self.host.call(
                f"deleting network {backend_name}",
                lambda c: _remove_network(c.networkLookupByName(backend_name)),
            )

    def add_dhcp_host(self, backend_name: str, host: DhcpHost) -> None:
        entry = xml.DhcpHostEntry(host.mac, host.ip, host.name)

        def run(c: libvirt.virConnect) -> None:
            net = c.networkLookupByName(backend_name)
            if any(h.mac == host.mac for h in xml.dhcp_hosts_of(net.XMLDesc(0))):
                return
            _update_host(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, entry)

        self.host.call(f"reserving {host.ip} on {backend_name}", run)

    def remove_dhcp_host(self, backend_name: str, mac: str) -> None:
        def run(c: libvirt.virConnect) -> None:
            net = c.networkLookupByName(backend_name)
            for h in xml.dhcp_hosts_of(net.XMLDesc(0)):
                if h.mac == mac:
                    _update_host(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, h)

        with contextlib.suppress(NotFound):
            self.host.call(f"releasing {mac} on {backend_name}", run)

    def list_networks(self) -> list[str]:
        return self.host.call(
            "listing networks",
            lambda c: [n.name() for n in c.listAllNetworks(0) if n.name().startswith(NETWORK_PREFIX)],
        )

    def dhcp_hosts(self, backend_name: str) -> list[DhcpHost]:
        entries = self.host.call(
            f"reading network {backend_name}",
            lambda c: xml.dhcp_hosts_of(c.networkLookupByName(backend_name).XMLDesc(0)),
        )
        return [DhcpHost(e.mac, e.ip, e.name) for e in entries]


def _disks(
    disk: Path, seed: Path, install_media: Path | None, base: tuple[Path, str] | None
) -> tuple[xml.Disk, ...]:
    """The system disk (on its base image, if any) and the NoCloud seed; a VM installed from an
    ISO also gets the ISO as its CD-ROM, first in the boot order, then its disk (an empty drive is
    skipped at boot). The seed stays: an installer that reads NoCloud data (hostname, SSH keys)
    finds it, others ignore it. Every disk's backing chain is written out, so that libvirt neither
    probes formats nor follows a name written inside a file."""
    chain = (xml.Layer(str(base[0]), base[1]),) if base is not None else ()
    seed_disk = xml.Disk(path=str(seed), format="raw", target="vdb", readonly=True, backing=())
    if install_media is None:
        return (xml.Disk(path=str(disk), format="qcow2", target="vda", backing=chain), seed_disk)
    return (
        xml.Disk(path=str(disk), format="qcow2", target="vda", boot_order=2, backing=chain),
        seed_disk,
        xml.Disk.cdrom(str(install_media), boot_order=1),
    )


def _destroy_if_active(dom: libvirt.virDomain) -> None:
    try:
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError as err:
        # The domain stopping by itself between the check and the call is fine.
        if err.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise


def _memory_mb(dom: libvirt.virDomain) -> int:
    """A domain's memory now, plugged DIMMs included (MiB)."""
    return int(dom.info()[2]) // 1024


def _plug(dom: libvirt.virDomain, cpus: int | None, memory_mb: int | None) -> None:
    """Grow a running domain: vCPUs up to its maximum, memory as one more DIMM. Anything that
    needs a stop (fewer vCPUs, less memory, more than its definition has room for) is a 409."""
    live, config = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if cpus:
        most = dom.vcpusFlags(live | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        if cpus < dom.vcpusFlags(live):
            raise Conflict("vCPUs are removed while the VM is stopped", code="instance_running")
        if cpus > most:
            raise Conflict(
                f"a running VM takes up to {most} vCPUs: stop it for more", code="instance_running"
            )
    have = _memory_mb(dom)
    if memory_mb and memory_mb != have:
        room = xml.Domain.from_xml(dom.XMLDesc(0)).max_memory_mb or have
        if memory_mb < have:
            raise Conflict("memory shrinks while the VM is stopped", code="instance_running")
        if memory_mb > room:
            raise Conflict(
                f"a running VM grows to {room} MiB at most: stop it for more", code="instance_running"
            )
        if (memory_mb - have) % xml.MEMORY_BLOCK_MB:
            raise Conflict(
                f"while the VM runs, memory grows in steps of {xml.MEMORY_BLOCK_MB} MiB ({have} MiB now)",
                code="memory_step",
            )
    if cpus:
        dom.setVcpusFlags(cpus, live | config)
    if memory_mb and memory_mb > have:
        dom.attachDeviceFlags(xml.MemoryDimm(memory_mb - have).to_xml(), live | config)


def _label_of(dom: libvirt.virDomain) -> xml.CloudletMetadata | None:
    """A domain's cloudlet label; None when it carries none."""
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml.CLOUDLET_NS, 0)
    except libvirt.libvirtError as err:
        if err.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_METADATA, libvirt.VIR_ERR_NO_DOMAIN):
            return None
        raise
    return xml.parse_metadata_element(text)


def _deployment_of(dom: libvirt.virDomain) -> str | None:
    """The deployment named in a domain's cloudlet label; None when it carries no label."""
    label = _label_of(dom)
    return None if label is None else label.deployment


def _update_host(net: libvirt.virNetwork, command: int, entry: xml.DhcpHostEntry) -> None:
    net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, entry.to_xml(), _UPDATE_FLAGS)


def _remove_network(net: libvirt.virNetwork) -> None:
    if net.isActive():
        net.destroy()
    net.undefine()
