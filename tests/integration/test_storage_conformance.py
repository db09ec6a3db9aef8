"""One storage contract, every VM driver: the same tests run against the simulated driver and
libvirt (real pools, qcow2 volumes and domain definitions). What the unit tests assume of the sim
driver is checked here to hold for libvirt too."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudlet.config import Accelerator
from cloudlet.drivers.base import ComputeDriver, InstanceSpec, StorageDriver, StoragePoolSpec
from cloudlet.errors import CloudletError, Conflict, NotFound
from tests.integration.conftest import traversable_tmp

pytestmark = pytest.mark.integration
GIB = 1024**3


class VmStorageDriver(ComputeDriver, StorageDriver):
    """What these tests drive: a VM driver that is also a storage driver."""


@dataclass
class Storage:
    driver: VmStorageDriver
    pool: StoragePoolSpec
    deployment: str
    folder: Path
    image: Path


@pytest.fixture(params=["sim", "libvirt"])
def storage(request, tiny_image: Path) -> Iterator[Storage]:  # type: ignore[no-untyped-def]
    deployment = secrets.token_hex(8)
    folder = traversable_tmp("storage-conformance-")
    image = folder / "tiny.qcow2"
    shutil.copyfile(tiny_image, image)
    image.chmod(0o644)
    driver: VmStorageDriver
    if request.param == "sim":
        from cloudlet.drivers.sim import SimDriver

        driver = SimDriver()  # type: ignore[assignment]
    else:
        from cloudlet.drivers.libvirt.driver import LibvirtDriver

        driver = LibvirtDriver("qemu:///system", folder / "instances", deployment, Accelerator.AUTO)  # type: ignore[assignment]
    pool = StoragePoolSpec(f"cloudlet-{deployment}-{uuid.uuid4()}", "dir", str(folder / "volumes"))
    try:
        yield Storage(driver, pool, deployment, folder, image)
    finally:
        for instance in driver.list_instances():
            with contextlib.suppress(CloudletError):
                driver.delete(instance.id)
        with contextlib.suppress(CloudletError):
            driver.delete_pool(pool.backend_name)
        driver.close()
        shutil.rmtree(folder, ignore_errors=True)


def vm(st: Storage) -> str:
    spec = InstanceSpec(
        id=str(uuid.uuid4()),
        name="conf",
        workspace_id="conformance",
        cpus=1,
        memory_mb=128,
        disk_gb=1,
        image_path=st.image,
        image_format="qcow2",
        hostname="conf",
    )
    st.driver.create(spec)
    return spec.id


def test_a_pool_is_made_once_and_reports_its_space(storage: Storage) -> None:
    d = storage.driver
    d.ensure_pool(storage.pool)
    d.ensure_pool(storage.pool)  # idempotent
    assert d.list_pools() == [storage.pool.backend_name]
    usage = d.pool_usage(storage.pool.backend_name)
    assert 0 < usage.available <= usage.capacity and usage.allocation <= usage.capacity
    d.delete_pool(storage.pool.backend_name)
    d.delete_pool(storage.pool.backend_name)  # already gone: fine
    assert d.list_pools() == []
    with pytest.raises(NotFound):
        d.pool_usage(storage.pool.backend_name)


def test_volumes_are_made_grown_and_removed(storage: Storage) -> None:
    d, pool = storage.driver, storage.pool.backend_name
    d.ensure_pool(storage.pool)
    volume_id = str(uuid.uuid4())
    d.create_volume(pool, volume_id, GIB)
    with pytest.raises(Conflict):
        d.create_volume(pool, volume_id, GIB)
    first = d.volume_usage(pool, volume_id)
    assert first.capacity == GIB and first.allocation < 64 * 1024**2  # qcow2: allocated on write
    d.resize_volume(pool, volume_id, 2 * GIB)
    assert d.volume_usage(pool, volume_id).capacity == 2 * GIB
    d.delete_volume(pool, volume_id)
    d.delete_volume(pool, volume_id)  # already gone: fine
    with pytest.raises(NotFound):
        d.volume_usage(pool, volume_id)


def test_volumes_attach_to_a_stopped_vm_and_detach(storage: Storage) -> None:
    d, pool = storage.driver, storage.pool.backend_name
    d.ensure_pool(storage.pool)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    d.create_volume(pool, first, GIB)
    d.create_volume(pool, second, GIB)
    instance_id = vm(storage)
    d.attach_volume(instance_id, pool, first, "vdc")
    with pytest.raises(Conflict):
        d.attach_volume(instance_id, pool, second, "vdc")  # the disk is taken
    d.attach_volume(instance_id, pool, second, "vdd")
    with pytest.raises(NotFound):
        d.attach_volume(str(uuid.uuid4()), pool, second, "vdc")
    with pytest.raises(NotFound):
        d.attach_volume(instance_id, pool, str(uuid.uuid4()), "vde")
    d.detach_volume(instance_id, "vdc")
    d.detach_volume(instance_id, "vdc")  # already off: fine
    d.attach_volume(instance_id, pool, first, "vdc")  # the target is free again
    d.delete(instance_id)
    d.detach_volume(instance_id, "vdd")  # the VM is gone: fine
    # the volumes outlive the VM, with their data, and can go now
    assert d.volume_usage(pool, first).capacity == GIB
    d.delete_volume(pool, first)
    d.delete_volume(pool, second)
