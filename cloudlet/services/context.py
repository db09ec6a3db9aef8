"""Who is asking, and in which workspace, with which permissions. Every service call takes one."""

from __future__ import annotations

from dataclasses import dataclass

from cloudlet.errors import Forbidden
from cloudlet.services.permissions import ALL_PERMISSIONS


@dataclass(frozen=True)
class RequestContext:
    principal: str  # who, for messages and the audit log: a username, or "system"
    workspace_id: str  # the scope every query is filtered by
    role: str = "owner"
    source: str | None = None  # client address, for the audit log
    user_id: str | None = None
    token_id: str | None = None  # the API token used, if any
    permissions: frozenset[str] = ALL_PERMISSIONS
    is_admin: bool = False  # a system admin: users, quotas, every workspace
    login_id: str | None = None  # the sign-in (refresh family) of a signed-in user's request

    def can(self, permission: str) -> bool:
        # A system admin's power is in the permissions given at sign-in; a token an admin scoped
        # to a smaller role is held to that role.
        return permission in self.permissions

    def require_admin(self, what: str) -> None:
        """403 unless a system admin: ``what`` completes "only system admins ..."."""
        if not self.is_admin:
            raise Forbidden(f"only system admins {what}", code="permission_denied")

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise Forbidden(
                f"your role ({self.role}) in this workspace does not allow {permission}",
                code="permission_denied",
                permission=permission,
            )
