"""The explicit registry of VM drivers: a name in the settings picks a factory from this dict."""

from __future__ import annotations

from collections.abc import Callable

from cloudlet.config import Settings
from cloudlet.drivers.base import ComputeDriver, NetworkDriver
from cloudlet.drivers.containers import ContainerDriver
from cloudlet.errors import Invalid

VMBackend = tuple[ComputeDriver, NetworkDriver]


def _libvirt(settings: Settings, deployment: str) -> VMBackend:
    from cloudlet.drivers.libvirt.driver import LibvirtDriver

    driver = LibvirtDriver(settings.libvirt_uri, settings.instances_dir, deployment, settings.accelerator)
    return driver, driver


def _sim(settings: Settings, deployment: str) -> VMBackend:
    from cloudlet.drivers.sim import SimDriver

    driver = SimDriver()
    return driver, driver


VM_DRIVERS: dict[str, Callable[[Settings, str], VMBackend]] = {"libvirt": _libvirt, "sim": _sim}


def make_vm_backend(settings: Settings, deployment: str) -> VMBackend:
    """The compute and network drivers for VMs named by ``settings.vm_driver``; ``deployment``
    labels what they create so that several deployments can share one hypervisor."""
    try:
        factory = VM_DRIVERS[settings.vm_driver]
    except KeyError:
        raise Invalid(f"unknown vm_driver {settings.vm_driver!r}; choose from {sorted(VM_DRIVERS)}") from None
    return factory(settings, deployment)


def _docker(settings: Settings, deployment: str) -> ContainerDriver:
    from cloudlet.drivers.docker.driver import DockerDriver

    return DockerDriver(settings.docker_url, deployment)


def _sim_containers(settings: Settings, deployment: str) -> ContainerDriver:
    from cloudlet.drivers.sim_containers import SimContainerDriver

    return SimContainerDriver()


CONTAINER_DRIVERS: dict[str, Callable[[Settings, str], ContainerDriver]] = {
    "docker": _docker,
    "sim": _sim_containers,
}


def make_container_driver(settings: Settings, deployment: str) -> ContainerDriver | None:
    """The container driver named by ``settings.container_driver``; None when containers are off."""
    if settings.container_driver == "none":
        return None
    try:
        factory = CONTAINER_DRIVERS[settings.container_driver]
    except KeyError:
        choices = sorted([*CONTAINER_DRIVERS, "none"])
        raise Invalid(
            f"unknown container_driver {settings.container_driver!r}; choose from {choices}"
        ) from None
    return factory(settings, deployment)
