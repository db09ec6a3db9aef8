from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cloudlet.api.app import create_app
from cloudlet.client import Client
from cloudlet.config import Settings
from cloudlet.db.models import AuditEntry, Instance, IPAllocation
from cloudlet.drivers.sim import SimDriver
from cloudlet.drivers.sim_containers import SimContainerDriver
from cloudlet.services.cloud import Cloud


@dataclass
class SimCloud:
    client: TestClient
    cloud: Cloud
    driver: SimDriver
    token: str
    data_dir: Path
    containers: SimContainerDriver

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, **kw: object):  # type: ignore[no-untyped-def]
        return self.client.post(path, headers=self.headers, **kw)  # type: ignore[arg-type]

    def get(self, path: str, **kw: object):  # type: ignore[no-untyped-def]
        return self.client.get(path, headers=self.headers, **kw)  # type: ignore[arg-type]

    def put(self, path: str, **kw: object):  # type: ignore[no-untyped-def]
        return self.client.put(path, headers=self.headers, **kw)  # type: ignore[arg-type]

    def delete(self, path: str, **kw: object):  # type: ignore[no-untyped-def]
        return self.client.delete(path, headers=self.headers, **kw)  # type: ignore[arg-type]

    def cli_client(self) -> Client:
        """A ``cloudlet.client.Client`` on this app, in-process: what CLI tests patch in. A second
        TestClient on the same app shares the running cloud, and closing it (as every command
        does) leaves the fixture's client open."""
        c = Client("http://testserver", self.token)
        c.http.close()
        c.http = TestClient(self.client.app, headers=self.headers)
        return c


@contextmanager
def sim_cloud(data_dir: Path, **overrides: Any) -> Iterator[SimCloud]:
    """A whole server on the simulated driver and a throw-away SQLite database in ``data_dir``;
    ``overrides`` change settings."""
    settings = Settings(
        **overrides,
        data_dir=data_dir,
        vm_driver="sim",
        container_driver="sim",
        memory_reserve_mb=512,
        resync_interval=3600,
        image_import_dirs=[data_dir],  # tests import images they make in their tmp folder
    )
    driver = SimDriver(memory_mb=8192)
    containers = SimContainerDriver()
    cloud = Cloud.build(settings, backend=(driver, driver), container_driver=containers)
    tokens: list[str] = []
    app = create_app(settings, cloud=cloud, on_admin_token=tokens.append)
    mutations: list[str] = []

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        """The app, counting the mutating calls that reach it (through any client)."""
        mutating = scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE")
        if mutating and scope["path"].startswith("/api/"):
            mutations.append(f"{scope['method']} {scope['path']}")
        await app(scope, receive, send)

    with TestClient(counting) as client:
        yield SimCloud(client, cloud, driver, tokens[0], data_dir, containers)
        # Every mutating call of the test, refused ones included, left an audit row.
        cloud.audit.flush()
        with cloud.db.reads() as s:
            # websocket sessions (host terminal) and the reservation API's changes on GET are
            # audited too, by their own code
            http = AuditEntry.method.in_(("POST", "PUT", "PATCH", "DELETE"))
            audited = s.scalar(select(func.count()).select_from(AuditEntry).where(http)) or 0
        assert audited == len(mutations), f"{len(mutations)} mutating calls but {audited} audit rows"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimCloud]:
    """A whole server on the simulated driver and a throw-away SQLite database."""
    with sim_cloud(tmp_path) as cloud:
        yield cloud


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCloud]:
    """One server for a whole module, for tests that change nothing in it (refused requests)."""
    with sim_cloud(tmp_path_factory.mktemp("shared")) as cloud:
        yield cloud


@pytest.fixture
def qcow2_image(tmp_path: Path) -> Path:
    import subprocess

    path = tmp_path / "src.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1G"], check=True)
    return path


@pytest.fixture
def make_qcow2(tmp_path: Path) -> Callable[..., Path]:
    """A factory of qcow2 files: ``make_qcow2("disk", "3G", backing=None)``."""

    def make(name: str, size: str = "1G", backing: Path | None = None) -> Path:
        path = tmp_path / f"{name}.qcow2"
        args = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if backing is not None:
            args += ["-F", "qcow2", "-b", str(backing)]
        subprocess.run([*args, str(path), size], check=True)
        return path

    return make


@pytest.fixture
def image(sim: SimCloud, qcow2_image: Path) -> str:
    """The name of a ready 1 GiB qcow2 image in ``sim``."""
    resp = sim.post(
        "/api/v1/images", params={"wait": 10}, json={"name": "tiny", "source_path": str(qcow2_image)}
    )
    assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
    return "tiny"


@pytest.fixture
def create_vm(sim: SimCloud, image: str) -> Callable[..., httpx.Response]:
    """POST /api/v1/instances?wait=10 with small defaults; keyword arguments override body fields."""

    def create(name: str, **fields: Any) -> httpx.Response:
        body = {"name": name, "image": image, "memory": 64, **fields}
        return sim.post("/api/v1/instances", params={"wait": 10}, json=body)  # type: ignore[no-any-return]

    return create


@pytest.fixture
def footprint(sim: SimCloud) -> Callable[[], dict[str, int]]:
    """Everything an instance leaves in the server: rows, addresses, backend objects, DHCP entries."""

    def count() -> dict[str, int]:
        with sim.cloud.db.sessions() as s:
            rows = s.scalar(select(func.count()).select_from(Instance)) or 0
            allocations = s.scalar(select(func.count()).select_from(IPAllocation)) or 0
        listed = sim.get("/api/v1/instances").json()["total"]
        used = sum(n["addresses_used"] for n in sim.get("/api/v1/networks").json())
        return {
            "instance_rows": rows,
            "ip_allocations": allocations,
            "api_instances": listed,
            "api_addresses_used": used,
            "driver_instances": len(sim.driver.instances),
            "dhcp_hosts": sum(len(n.hosts) for n in sim.driver.networks.values()),
        }

    return count
