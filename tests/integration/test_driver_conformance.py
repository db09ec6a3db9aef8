"""One contract, every compute driver: the same tests run against the simulated driver, libvirt
(real QEMU guests) and Docker (real containers). A driver that passes can back cloudlet's
instances; anything kind-specific is tested elsewhere."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudlet.config import Accelerator
from cloudlet.drivers import keymap
from cloudlet.drivers.base import ComputeDriver, ContainerSpec, InstanceSpec, PowerState
from cloudlet.errors import CloudletError, InvalidState, NotFound, Unsupported
from tests.helpers import eventually
from tests.integration.conftest import traversable_tmp
from tests.integration.docker_images import BUSYBOX_REF, ensure_busybox_image

pytestmark = pytest.mark.integration


@dataclass
class Backend:
    driver: ComputeDriver
    spec: Callable[..., InstanceSpec]  # a valid spec; ``broken=True`` gives one whose create fails


def _spec(**kw: object) -> InstanceSpec:
    name = f"conf-{secrets.token_hex(3)}"
    base: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "name": name,
        "workspace_id": "conformance",
        "cpus": 1,
        "memory_mb": 128,
        "disk_gb": 1,
        "image_path": None,
        "image_format": None,
        "hostname": name,
    }
    return InstanceSpec(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reachable_tiny(tiny_image: Path) -> Iterator[Path]:
    """A copy of the tiny image where QEMU (user libvirt-qemu) can read it: the cache is under /root."""
    folder = traversable_tmp("conformance-image-")
    copy = folder / tiny_image.name
    shutil.copyfile(tiny_image, copy)
    copy.chmod(0o644)
    yield copy
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sim", "libvirt", "docker"])
def backend(request, reachable_tiny) -> Iterator[Backend]:  # type: ignore[no-untyped-def]
    tiny_image = reachable_tiny
    deployment = f"conformance-{secrets.token_hex(4)}"
    folder: Path | None = None
    if request.param == "sim":
        from cloudlet.drivers.sim import SimDriver

        driver: ComputeDriver = SimDriver()

        def spec(broken: bool = False) -> InstanceSpec:
            return _spec(image_path=tiny_image, image_format="qcow2")

    elif request.param == "libvirt":
        from cloudlet.drivers.libvirt.driver import LibvirtDriver

        folder = traversable_tmp("conformance-")
        driver = LibvirtDriver("qemu:///system", folder, deployment, Accelerator.AUTO)

        def spec(broken: bool = False) -> InstanceSpec:
            path = folder / "missing.qcow2" if broken else tiny_image  # type: ignore[operator]
            return _spec(image_path=path, image_format="qcow2")

    else:
        from cloudlet.drivers.docker.driver import DockerDriver

        ensure_busybox_image()
        driver = DockerDriver("unix:///var/run/docker.sock", deployment)

        def spec(broken: bool = False) -> InstanceSpec:
            image = "local/not-there:1" if broken else BUSYBOX_REF
            return _spec(container=ContainerSpec(image, command=("sleep", "600")), memory_mb=0)

    if not driver.info().ok:
        pytest.fail(f"{request.param} driver unavailable: {driver.info().error}")
    made: list[str] = []
    original_create = driver.create

    def tracking_create(s: InstanceSpec) -> None:
        made.append(s.id)
        original_create(s)

    driver.create = tracking_create  # type: ignore[method-assign]
    try:
        yield Backend(driver, spec)
    finally:
        for instance_id in made:
            with contextlib.suppress(CloudletError):
                driver.delete(instance_id)
        driver.close()  # also closes the engine's sockets: none may leak into the next test
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def ids(driver: ComputeDriver) -> set[str]:
    return {i.id for i in driver.list_instances()}


def test_create_makes_a_stopped_listed_instance(backend: Backend) -> None:
    spec = backend.spec()
    backend.driver.create(spec)
    assert backend.driver.state(spec.id) is PowerState.STOPPED
    assert spec.id in ids(backend.driver)


def test_start_and_stop_are_idempotent(backend: Backend) -> None:
    d, spec = backend.driver, backend.spec()
    d.create(spec)
    d.start(spec.id)
    d.start(spec.id)
    assert d.state(spec.id) is PowerState.RUNNING
    d.stop(spec.id, force=True)
    d.stop(spec.id, force=True)
    assert d.state(spec.id) is PowerState.STOPPED


def test_graceful_stop_falls_back_to_force_after_the_timeout(backend: Backend) -> None:
    d, spec = backend.driver, backend.spec()
    d.create(spec)
    d.start(spec.id)
    d.stop(spec.id, timeout=2)  # a guest still booting may ignore ACPI: then it is forced off
    assert d.state(spec.id) is PowerState.STOPPED


def test_reboot_keeps_it_running(backend: Backend) -> None:
    d, spec = backend.driver, backend.spec()
    d.create(spec)
    d.start(spec.id)
    d.reboot(spec.id)
    assert d.state(spec.id) is PowerState.RUNNING


def test_delete_removes_everything_and_is_idempotent(backend: Backend) -> None:
    d, spec = backend.driver, backend.spec()
    d.create(spec)
    d.start(spec.id)
    d.delete(spec.id)  # running: forced off first
    assert spec.id not in ids(d)
    assert spec.id not in d.residue()
    with pytest.raises(NotFound):
        d.state(spec.id)
    d.delete(spec.id)


def test_unknown_instances_are_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.driver.state(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        backend.driver.start(str(uuid.uuid4()))


def test_a_failed_create_leaves_nothing(backend: Backend) -> None:
    if backend.driver.name == "sim":
        backend.driver.fail_next["create"] = 1  # type: ignore[attr-defined]
    spec = backend.spec(broken=True)
    with pytest.raises(CloudletError):
        backend.driver.create(spec)
    assert spec.id not in ids(backend.driver)
    assert spec.id not in backend.driver.residue()


def test_watch_reports_state_changes(backend: Backend) -> None:
    d, spec = backend.driver, backend.spec()
    seen: list[tuple[str, PowerState]] = []
    lock = threading.Lock()

    def record(instance_id: str, state: PowerState) -> None:
        with lock:
            seen.append((instance_id, state))

    d.watch(record)
    d.create(spec)
    d.start(spec.id)
    eventually(lambda: (spec.id, PowerState.RUNNING) in seen, timeout=15, what="a 'running' event")
    d.stop(spec.id, force=True)
    eventually(lambda: (spec.id, PowerState.STOPPED) in seen, timeout=15, what="a 'stopped' event")


def test_pause_and_resume_where_supported(backend: Backend) -> None:
    d, spec = backend.driver, backend.spec()
    if not d.capabilities.pause:
        pytest.skip(f"{d.name} declares no pause capability")
    d.create(spec)
    d.start(spec.id)
    d.pause(spec.id)
    assert d.state(spec.id) is PowerState.PAUSED
    d.resume(spec.id)
    assert d.state(spec.id) is PowerState.RUNNING


def test_only_its_own_deployment_is_listed(backend: Backend) -> None:
    """Objects of another deployment (or nobody's) on the same backend are never listed."""
    d, spec = backend.driver, backend.spec()
    d.create(spec)
    assert ids(d) == {spec.id}


def test_consoles_where_supported(backend: Backend) -> None:
    """Serial and VNC streams, keys and screenshots on a running instance; a stopped one is a
    409 ``instance_not_running``; open streams end when the instance stops. Drivers without
    consoles say so with ``Unsupported``."""
    d, spec = backend.driver, backend.spec()
    d.create(spec)
    calls: dict[str, Callable[[], object]] = {
        "serial": lambda: d.open_serial_console(spec.id),
        "vnc": lambda: d.open_vnc(spec.id),
        "keys": lambda: d.send_keys(spec.id, keymap.chords("a")),
        "screenshot": lambda: d.screenshot(spec.id),
    }
    if not (d.capabilities.serial_console and d.capabilities.vnc_console):
        for call in calls.values():
            with pytest.raises(Unsupported):
                call()
        return
    for what, call in calls.items():
        with pytest.raises(InvalidState) as stopped:
            call()
        assert stopped.value.code == "instance_not_running", what
    d.start(spec.id)
    vnc = d.open_vnc(spec.id)
    assert vnc.read(12).startswith(b"RFB 003.00")
    vnc.close()
    assert vnc.read() == b""
    assert d.screenshot(spec.id).startswith(b"\x89PNG\r\n\x1a\n")
    d.send_keys(spec.id, keymap.chords("A\n"))
    console = d.open_serial_console(spec.id)
    ended = threading.Event()

    def drain() -> None:
        while console.read():
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    d.stop(spec.id, force=True)
    assert ended.wait(15), "the serial stream did not end when the instance stopped"
    console.close()
