"""Storage pools, volumes and volume attachment on libvirt: the StorageDriver contract, mixed into
``LibvirtDriver`` (it shares its connection and its domains).

Pools are named ``cloudlet-<deployment>-<pool id>``: libvirt pools carry no metadata, so the name
is cloudlet's label, and several deployments can share one libvirtd. Volumes are named
``<volume id>.qcow2``."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

import libvirt

from cloudlet.drivers.base import StorageDriver, StoragePoolSpec, StorageUsage
from cloudlet.drivers.libvirt import storage_xml
from cloudlet.drivers.libvirt.guest import domain_name
from cloudlet.drivers.libvirt.host import LibvirtHost
from cloudlet.errors import Conflict, DriverError, NotFound
from cloudlet.filemodes import Sharing

log = logging.getLogger(__name__)

_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
DETACH_TIMEOUT = 30.0  # seconds a guest gets to let go of a hot-unplugged disk


def pool_prefix(deployment: str) -> str:
    return f"cloudlet-{deployment}-"


def volume_file(volume_id: str) -> str:
    return f"{volume_id}.qcow2"


def _code(err: libvirt.libvirtError) -> int:
    return int(err.get_error_code() or 0)


class LibvirtStorage(StorageDriver):
    """Needs ``host`` and ``deployment`` from the class it is mixed into."""

    host: LibvirtHost
    deployment: str
    _folder_sharing: Callable[[], Sharing]  # how a pool's folder is opened to QEMU
    detach_timeout: float = DETACH_TIMEOUT

    # -- pools -----------------------------------------------------------------------------------
    def ensure_pool(self, spec: StoragePoolSpec) -> None:
        sharing = self._folder_sharing()
        doc = storage_xml.StoragePool(
            spec.backend_name,
            spec.kind,
            spec.path,
            spec.source_host,
            spec.source_path,
            mode=f"{sharing.mode:04o}",
            owner=os.geteuid(),
            group=sharing.gid,
        )

        def run(c: libvirt.virConnect) -> None:
            try:
                pool = c.storagePoolLookupByName(spec.backend_name)
            except libvirt.libvirtError as err:
                if _code(err) != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
            else:
                if not pool.isActive():
                    pool.create(0)
                return
            pool = c.storagePoolDefineXML(doc.to_xml(), 0)
            try:
                pool.build(0)  # a dir pool: its folder; a netfs pool: its mount point
                pool.create(0)
                pool.setAutostart(1)
            except libvirt.libvirtError:
                with contextlib.suppress(libvirt.libvirtError):
                    if pool.isActive():
                        pool.destroy()
                    pool.undefine()
                raise

        self.host.call(f"setting up storage pool {spec.path}", run)

    def delete_pool(self, backend_name: str) -> None:
        def run(c: libvirt.virConnect) -> None:
            pool = c.storagePoolLookupByName(backend_name)
            if pool.isActive():
                pool.destroy()  # a netfs pool: unmounted; files stay where they are
            pool.undefine()

        with contextlib.suppress(NotFound):
            self.host.call(f"deleting storage pool {backend_name}", run)

    def pool_usage(self, backend_name: str) -> StorageUsage:
        def run(c: libvirt.virConnect) -> StorageUsage:
            pool = c.storagePoolLookupByName(backend_name)
            try:
                pool.refresh(0)
            except libvirt.libvirtError as err:
                # A volume being built holds the pool ("asynchronous jobs running"): read the
                # numbers of the last refresh instead of failing the listing.
                if _code(err) != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise
            _state, capacity, allocation, available = pool.info()
            return StorageUsage(int(capacity), int(allocation), int(available))

        return self.host.call(f"reading storage pool {backend_name}", run)

    def list_pools(self) -> list[str]:
        prefix = pool_prefix(self.deployment)
        return self.host.call(
            "listing storage pools",
            lambda c: [p.name() for p in c.listAllStoragePools(0) if p.name().startswith(prefix)],
        )

    # -- volumes ---------------------------------------------------------------------------------
    def create_volume(self, pool: str, volume_id: str, size_bytes: int) -> None:
        doc = storage_xml.StorageVolume(volume_file(volume_id), size_bytes)

        def run(c: libvirt.virConnect) -> None:
            p = c.storagePoolLookupByName(pool)
            with contextlib.suppress(libvirt.libvirtError):
                p.refresh(0)
            if volume_file(volume_id) in p.listVolumes():
                raise Conflict(f"volume {volume_id} exists in pool {pool}", code="volume_exists")
            p.createXML(doc.to_xml(), 0)

        self.host.call("creating volume", run)

    def delete_volume(self, pool: str, volume_id: str) -> None:
        def run(c: libvirt.virConnect) -> None:
            c.storagePoolLookupByName(pool).storageVolLookupByName(volume_file(volume_id)).delete(0)

        with contextlib.suppress(NotFound):
            self.host.call("deleting volume", run)

    def volume_usage(self, pool: str, volume_id: str) -> StorageUsage:
        def run(c: libvirt.virConnect) -> StorageUsage:
            vol = c.storagePoolLookupByName(pool).storageVolLookupByName(volume_file(volume_id))
            _type, capacity, allocation = vol.info()
            return StorageUsage(int(capacity), int(allocation), 0)

        return self.host.call("reading volume", run)

    def resize_volume(
        self, pool: str, volume_id: str, size_bytes: int, *, instance_id: str | None = None, target: str = ""
    ) -> None:
        def run(c: libvirt.virConnect) -> None:
            if instance_id is not None:
                dom = c.lookupByName(domain_name(instance_id))
                if dom.isActive():  # QEMU holds the file: it grows it and tells the guest
                    dom.blockResize(target, size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                    return
            vol = c.storagePoolLookupByName(pool).storageVolLookupByName(volume_file(volume_id))
            vol.resize(size_bytes, 0)

        self.host.call("growing volume", run)

    # -- attachment ------------------------------------------------------------------------------
    def attach_volume(self, instance_id: str, pool: str, volume_id: str, target: str) -> None:
        def run(c: libvirt.virConnect) -> None:
            vol = c.storagePoolLookupByName(pool).storageVolLookupByName(volume_file(volume_id))
            disk = storage_xml.VolumeDisk(vol.path(), target, storage_xml.serial_of(volume_id))
            dom = c.lookupByName(domain_name(instance_id))
            if target in storage_xml.disk_targets(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)):
                raise Conflict(f"the VM already has a disk {target}", code="target_taken")
            dom.attachDeviceFlags(disk.to_xml(), _CONFIG | (_LIVE if dom.isActive() else 0))

        self.host.call("attaching volume", run)

    def detach_volume(self, instance_id: str, target: str) -> None:
        def live(c: libvirt.virConnect) -> bool:
            """Ask a running guest to let go; True when it still has the disk."""
            dom = c.lookupByName(domain_name(instance_id))
            if not dom.isActive():
                return False
            disk = storage_xml.disk_by_target(dom.XMLDesc(0), target)
            if disk is None:
                return False
            try:
                dom.detachDeviceFlags(disk, _LIVE)
            except libvirt.libvirtError as err:
                if _code(err) != libvirt.VIR_ERR_OPERATION_INVALID:  # it stopped meanwhile
                    raise
                return False
            return True

        def still_there(c: libvirt.virConnect) -> bool:
            dom = c.lookupByName(domain_name(instance_id))
            return dom.isActive() and storage_xml.disk_by_target(dom.XMLDesc(0), target) is not None

        def config(c: libvirt.virConnect) -> None:
            dom = c.lookupByName(domain_name(instance_id))
            disk = storage_xml.disk_by_target(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), target)
            if disk is not None:
                dom.detachDeviceFlags(disk, _CONFIG)

        try:
            if self.host.call("detaching volume", live):
                deadline = time.monotonic() + self.detach_timeout
                while self.host.call("reading domain", still_there):
                    if time.monotonic() > deadline:
                        raise DriverError(
                            f"the guest did not release disk {target} within {self.detach_timeout:.0f} s; "
                            "unmount it in the guest (or stop the VM) and try again",
                            code="detach_timeout",
                        )
                    time.sleep(0.25)
            self.host.call("detaching volume", config)
        except NotFound:  # the VM is gone, and the disk with it
            return
