"""Domain errors. Services and drivers raise these; ``cloudlet.api.errors`` renders them once as
RFC 9457 problem+json. Each class has an HTTP status and a stable machine-readable ``code``."""

from __future__ import annotations

from typing import Any


class CloudletError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra


class Invalid(CloudletError):
    status, code, title = 422, "invalid", "Invalid request"


class Unauthorized(CloudletError):
    status, code, title = 401, "unauthorized", "Authentication required"


class Forbidden(CloudletError):
    status, code, title = 403, "forbidden", "Not allowed"


class Unsupported(CloudletError):
    status, code, title = 501, "unsupported", "Not supported by this backend"


class NotFound(CloudletError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(CloudletError):
    status, code, title = 409, "conflict", "Conflict"


class InvalidState(Conflict):
    code, title = "invalid_state", "Action not allowed in this state"


class InUse(Conflict):
    code, title = "in_use", "Resource in use"


class Exhausted(Conflict):
    code, title = "exhausted", "Resource exhausted"


class InsufficientResources(Conflict):
    code, title = "insufficient_resources", "Not enough host resources"


class DriverError(CloudletError):
    """A backend (libvirt, Docker, qemu-img) refused or failed. ``transient`` errors may be retried."""

    status, code, title = 502, "driver_error", "Backend error"

    def __init__(self, detail: str, *, transient: bool = False, **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.transient = transient


class DriverUnavailable(DriverError):
    status, code, title = 503, "driver_unavailable", "Backend unavailable"

    def __init__(self, detail: str, **kw: Any) -> None:
        super().__init__(detail, transient=True, **kw)


class RegistryUnreachable(DriverError):
    """No container registry answered (DNS, connection or TLS failure): a pull or search cannot work."""

    status, code, title = 502, "registry_unreachable", "Registry unreachable"
