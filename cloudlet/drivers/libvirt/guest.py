"""One libvirt domain as cloudlet sees it: naming and the state mapping tables."""

from __future__ import annotations

import libvirt

from cloudlet.drivers.base import PowerState

DOMAIN_PREFIX = "cloudlet-"

# virDomainState -> PowerState
STATE_MAP: dict[int, PowerState] = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.PAUSED,
}

# virDomainEventType (lifecycle events) -> PowerState; events missing here change nothing.
EVENT_MAP: dict[int, PowerState] = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: PowerState.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: PowerState.MISSING,
}


def domain_name(instance_id: str) -> str:
    return f"{DOMAIN_PREFIX}{instance_id}"


def instance_id_of(domain_name_: str) -> str | None:
    """cloudlet's instance id for a domain name, or None for domains that are not cloudlet's."""
    if domain_name_.startswith(DOMAIN_PREFIX):
        return domain_name_[len(DOMAIN_PREFIX) :]
    return None
