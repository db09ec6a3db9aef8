"""The simulated StorageDriver, mixed into ``SimDriver``: pools, volumes and attachments in memory,
with the same contract (and refusals) as libvirt's. Only fast unit tests use it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cloudlet.drivers.base import PowerState, StorageDriver, StoragePoolSpec, StorageUsage
from cloudlet.errors import Conflict, DriverError, NotFound

SIM_POOL_CAPACITY = 1024**4  # 1 TiB per simulated pool


@dataclass
class SimPool:
    spec: StoragePoolSpec
    volumes: dict[str, int] = field(default_factory=dict)  # volume id -> bytes


class SimStorage(StorageDriver):
    """Needs ``instances``, ``_lock`` and ``fail_next`` from the class it is mixed into."""

    instances: dict[str, PowerState]
    fail_next: dict[str, int]
    _lock: threading.Lock

    def _init_storage(self) -> None:
        self.pools: dict[str, SimPool] = {}
        self.attachments: dict[str, dict[str, str]] = {}  # instance -> target -> volume id

    def _fail(self, method: str) -> None:
        """The test hook of ``SimDriver.fail_next``: raise DriverError that many times."""
        if self.fail_next.get(method, 0) > 0:
            self.fail_next[method] -= 1
            raise DriverError(f"simulated failure in {method}")

    def _pool(self, name: str) -> SimPool:
        if name not in self.pools:
            raise NotFound(f"no storage pool {name}", code="backend_not_found")
        return self.pools[name]

    def _volume(self, pool: str, volume_id: str) -> int:
        volumes = self._pool(pool).volumes
        if volume_id not in volumes:
            raise NotFound(f"no volume {volume_id}", code="backend_not_found")
        return volumes[volume_id]

    def ensure_pool(self, spec: StoragePoolSpec) -> None:
        with self._lock:
            self._fail("ensure_pool")
            if any(p.spec.path == spec.path and n != spec.backend_name for n, p in self.pools.items()):
                raise DriverError(f"a storage pool already uses {spec.path}")
            self.pools.setdefault(spec.backend_name, SimPool(spec))

    def delete_pool(self, backend_name: str) -> None:
        with self._lock:
            self.pools.pop(backend_name, None)

    def pool_usage(self, backend_name: str) -> StorageUsage:
        with self._lock:
            used = sum(self._pool(backend_name).volumes.values()) // 100  # qcow2 allocates on write
            return StorageUsage(SIM_POOL_CAPACITY, used, SIM_POOL_CAPACITY - used)

    def list_pools(self) -> list[str]:
        with self._lock:
            return list(self.pools)

    def create_volume(self, pool: str, volume_id: str, size_bytes: int) -> None:
        with self._lock:
            self._fail("create_volume")
            volumes = self._pool(pool).volumes
            if volume_id in volumes:
                raise Conflict(f"volume {volume_id} exists in pool {pool}", code="volume_exists")
            volumes[volume_id] = size_bytes

    def delete_volume(self, pool: str, volume_id: str) -> None:
        with self._lock:
            if any(volume_id in targets.values() for targets in self.attachments.values()):
                raise DriverError(f"volume {volume_id} is in use by a domain")
            if pool in self.pools:
                self.pools[pool].volumes.pop(volume_id, None)

    def volume_usage(self, pool: str, volume_id: str) -> StorageUsage:
        with self._lock:
            size = self._volume(pool, volume_id)
            return StorageUsage(size, size // 100, 0)

    def resize_volume(
        self, pool: str, volume_id: str, size_bytes: int, *, instance_id: str | None = None, target: str = ""
    ) -> None:
        with self._lock:
            self._fail("resize_volume")
            if size_bytes < self._volume(pool, volume_id):
                raise DriverError("volumes only grow")
            self.pools[pool].volumes[volume_id] = size_bytes

    def attach_volume(self, instance_id: str, pool: str, volume_id: str, target: str) -> None:
        with self._lock:
            self._fail("attach_volume")
            self._volume(pool, volume_id)
            if instance_id not in self.instances:
                raise NotFound(f"no instance {instance_id}", code="backend_not_found")
            disks = self.attachments.setdefault(instance_id, {})
            if target in disks:
                raise Conflict(f"the VM already has a disk {target}", code="target_taken")
            disks[target] = volume_id

    def detach_volume(self, instance_id: str, target: str) -> None:
        with self._lock:
            self._fail("detach_volume")
            self.attachments.get(instance_id, {}).pop(target, None)

    def forget_attachments(self, instance_id: str) -> None:
        """The domain is gone: so are its disks (the volumes themselves stay)."""
        self.attachments.pop(instance_id, None)
