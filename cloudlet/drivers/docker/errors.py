"""Docker SDK errors mapped to domain errors by HTTP status and exception type, in one place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker.errors
import requests.exceptions

from cloudlet.errors import (
    Conflict,
    DriverError,
    DriverUnavailable,
    InUse,
    Invalid,
    NotFound,
    RegistryUnreachable,
)

# What the daemon says when it cannot reach a registry at all (DNS, TCP or TLS failure).
_UNREACHABLE_MARKERS = (
    "no such host",
    "dial tcp",
    "connection refused",
    "i/o timeout",
    "network is unreachable",
    "tls handshake timeout",
    "context deadline exceeded",
    "server misbehaving",
)


def explain(err: docker.errors.APIError) -> str:
    return str(err.explanation or err)


def is_registry_unreachable(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _UNREACHABLE_MARKERS)


def translate(err: Exception, what: str) -> Exception:
    """The domain error for a Docker failure while doing ``what``."""
    if isinstance(err, requests.exceptions.ConnectionError):
        return DriverUnavailable(f"{what}: the Docker engine does not answer ({err})")
    if isinstance(err, docker.errors.ImageNotFound):
        return Invalid(f"{what}: {explain(err)}", code="unknown_image")
    if isinstance(err, docker.errors.NotFound):
        return NotFound(f"{what}: {explain(err)}", code="backend_not_found")
    if isinstance(err, docker.errors.APIError):
        message = explain(err)
        if err.status_code == 409:
            if "image" in message and ("being used" in message or "is using" in message):
                return InUse(f"{what}: {message}", code="image_in_use")
            return Conflict(f"{what}: {message}", code="backend_conflict")
        if "port is already allocated" in message or "address already in use" in message:
            return Conflict(f"{what}: {message}", code="port_in_use")
        if err.status_code == 400:
            return Invalid(f"{what}: {message}", code="backend_rejected")
        return DriverError(f"{what}: {message}")
    if isinstance(err, docker.errors.DockerException):
        return DriverError(f"{what}: {err}")
    return err


@contextlib.contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Run a block of SDK calls; any Docker error leaves it as the matching domain error."""
    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as err:
        raise translate(err, what) from err


def registry_error(err: Exception, what: str) -> Exception:
    """Pulls and searches: a daemon that cannot reach the registry is a 502 ``registry_unreachable``."""
    message = explain(err) if isinstance(err, docker.errors.APIError) else str(err)
    if is_registry_unreachable(message):
        return RegistryUnreachable(f"{what}: no registry is reachable ({message})")
    if isinstance(err, docker.errors.NotFound | docker.errors.ImageNotFound):
        return NotFound(f"{what}: {message}", code="registry_image_not_found")
    return translate(err, what)
