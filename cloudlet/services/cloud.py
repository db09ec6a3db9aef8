"""The assembled domain: settings, database, drivers and services, built once by the app factory
(or a test) and torn down with ``close``. Nothing here is a module-level singleton."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select

from cloudlet.config import Settings
from cloudlet.db import migrate
from cloudlet.db.models import Network
from cloudlet.db.session import Database, transaction
from cloudlet.drivers.base import ComputeDriver, NetworkDriver, StorageDriver
from cloudlet.drivers.containers import ContainerDriver
from cloudlet.drivers.registry import make_container_driver, make_vm_backend
from cloudlet.errors import CloudletError
from cloudlet.filemodes import DataLayout, Sharing
from cloudlet.services.apply import Apply
from cloudlet.services.audit import AuditLog
from cloudlet.services.auth import bootstrap, ensure_default_workspace
from cloudlet.services.clones import Clones
from cloudlet.services.consoles import Consoles
from cloudlet.services.container_images import ContainerImages
from cloudlet.services.context import RequestContext
from cloudlet.services.deployment import deployment_id
from cloudlet.services.events import EventBus
from cloudlet.services.image_download import Downloader
from cloudlet.services.images import Images
from cloudlet.services.instance_images import InstanceImages
from cloudlet.services.instances import Instances
from cloudlet.services.leader import Leadership
from cloudlet.services.logins import signing_key
from cloudlet.services.networks import Networks
from cloudlet.services.operations import Operations
from cloudlet.services.oplogs import OperationLogs
from cloudlet.services.pools import Pools
from cloudlet.services.projects import Projects
from cloudlet.services.ratelimit import LoginThrottle
from cloudlet.services.reconciler import Reconciler
from cloudlet.services.runners import Runners
from cloudlet.services.snapshots import Snapshots
from cloudlet.services.storage_pools import StoragePools
from cloudlet.services.volumes import Volumes

log = logging.getLogger(__name__)


@dataclass
class Cloud:
    settings: Settings
    db: Database
    bus: EventBus
    ops: Operations
    compute: ComputeDriver
    network_driver: NetworkDriver
    container_driver: ContainerDriver | None
    images: Images
    networks: Networks
    instances: Instances
    reconciler: Reconciler
    runners: Runners
    projects: Projects
    oplogs: OperationLogs
    audit: AuditLog
    jwt_key: str
    throttle: LoginThrottle
    container_images: ContainerImages | None  # None when containers are off
    pools: Pools
    snapshots: Snapshots
    instance_images: InstanceImages
    clones: Clones
    apply: Apply
    storage_pools: StoragePools
    volumes: Volumes
    consoles: Consoles
    layout: DataLayout

    @classmethod
    def build(
        cls,
        settings: Settings,
        backend: tuple[ComputeDriver, NetworkDriver] | None = None,
        container_driver: ContainerDriver | None = None,
    ) -> Cloud:
        """Assemble the cloud; tests pass their own drivers (``backend``, ``container_driver``),
        otherwise the settings name them."""
        layout = DataLayout(
            settings.data_dir, settings.effective_database_url, settings.effective_jwt_key_file
        )
        layout.check()
        layout.prepare()
        db = Database(settings.effective_database_url)
        migrate.upgrade(db.engine)
        bus = EventBus()
        runners = Runners(db.sessions, settings.heartbeat_interval)
        ops = Operations(db.sessions, db.reads, bus, runners.id, settings.operation_workers)
        with transaction(db.sessions) as s:
            deployment = deployment_id(s)
            jwt_key = signing_key(
                s, settings.jwt_secret, layout.key_file, shared_database=layout.database is None
            )
        compute, network_driver = backend or make_vm_backend(settings, deployment)
        containers = container_driver or make_container_driver(settings, deployment)
        networks = Networks(db.sessions, ops, network_driver, containers)
        instances = Instances(settings, db.sessions, ops, bus, compute, network_driver, networks, containers)
        images = Images(
            db.sessions,
            ops,
            settings.images_dir,
            settings.allowed_import_dirs,
            downloader=Downloader.from_settings(settings),
        )
        oplogs = OperationLogs(settings.operation_logs_dir, bus)
        storage = compute if isinstance(compute, StorageDriver) else None  # VM drivers with volumes
        storage_pools = StoragePools(db.sessions, ops, storage, deployment, settings.data_dir / "volumes")
        drivers: dict[str, ComputeDriver] = {"vm": compute}
        if containers is not None:
            drivers["container"] = containers
        pools = Pools(
            db.sessions,
            db.reads,
            bus,
            instances,
            min_lease=settings.pool_min_lease,
            leadership=Leadership(db.sessions, runners.id, ttl=max(10.0, 3 * settings.pool_interval)),
        )
        return cls(
            settings=settings,
            db=db,
            bus=bus,
            ops=ops,
            compute=compute,
            network_driver=network_driver,
            container_driver=containers,
            images=images,
            networks=networks,
            instances=instances,
            pools=pools,
            apply=Apply(db.sessions, ops, networks, images, instances, pools),
            snapshots=Snapshots(db.sessions, instances),
            instance_images=InstanceImages(db.sessions, images, instances),
            clones=Clones(db.sessions, instances),
            storage_pools=storage_pools,
            volumes=Volumes(db.sessions, ops, storage_pools, instances),
            consoles=Consoles(db.sessions, instances),
            reconciler=Reconciler(
                db.sessions, bus, ops, runners, drivers, network_driver, settings.resync_interval
            ),
            runners=runners,
            projects=Projects(settings.data_dir / "projects"),
            oplogs=oplogs,
            audit=AuditLog(db.sessions, db.reads),
            jwt_key=jwt_key,
            throttle=LoginThrottle(settings.login_attempts, settings.login_window),
            container_images=ContainerImages(db.sessions, ops, oplogs, containers) if containers else None,
            layout=layout,
        )

    def start(self) -> str | None:
        """Bring the cloud up: default workspace, first admin token (returned once), recovery,
        the default network, then the reconciler's threads. Returns the new token or None."""
        self.runners.register()
        self.runners.start()
        with transaction(self.db.sessions) as s:
            ws = ensure_default_workspace(s)
            token = bootstrap(s)
            has_default = s.scalar(
                select(Network.id).where(Network.workspace_id == ws.id, Network.name == "default")
            )
        system = RequestContext(principal="system", workspace_id=ws.id)
        info = self.compute.info()
        self._share_data_folder(reachable=info.ok)
        if not info.ok:
            log.error("%s driver unavailable: %s", info.name, info.error)
        else:
            try:
                self.reconciler.recover()
                self.storage_pools.ensure_default()
                self.storage_pools.recover()
                self.volumes.recover()
                if not has_default:
                    self.networks.create_now(system, "default", self.settings.default_network_cidr, "nat")
            except CloudletError as err:
                log.error("start-up reconciliation failed: %s", err.detail)
        self.reconciler.start()
        self.pools.start(self.settings.pool_interval)
        return token

    def _share_data_folder(self, *, reachable: bool) -> None:
        """Open the folders QEMU traverses to its group, now that the hypervisor can say who it
        runs as; unreachable, the folders keep the group an earlier start gave them."""
        sharing = None
        if reachable:
            try:
                sharing = Sharing.for_hypervisor(self.compute.hypervisor_identity())
            except CloudletError as err:
                log.error("cannot tell which user the hypervisor runs guests as: %s", err.detail)
        if sharing is None:
            log.warning("the data folder keeps its group: VMs may not reach their disks until a restart")
        self.layout.share(sharing)
        self.layout.report()

    def close(self) -> None:
        self.pools.stop()
        self.reconciler.stop()
        self.audit.close()
        self.ops.shutdown()
        self.runners.stop()
        self.compute.close()
        if self.container_driver is not None:
            self.container_driver.close()
        self.db.dispose()
