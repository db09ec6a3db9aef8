"""Permissions and the built-in roles.

A permission is "<resource>:<action>" over the resources {instance, network, image, pool, member}
and the actions {view, create, edit, delete} (the permission set of the Kloudak platform that
cloudlet replaces), plus "audit:view" for reading the workspace's audit log. A role is a set of
them; built-in roles exist in every workspace, custom roles are made per workspace.
"""

from __future__ import annotations

RESOURCES = ("instance", "network", "image", "pool", "member")
ACTIONS = ("view", "create", "edit", "delete")
AUDIT_VIEW = "audit:view"
ALL_PERMISSIONS: frozenset[str] = frozenset({f"{r}:{a}" for r in RESOURCES for a in ACTIONS} | {AUDIT_VIEW})
VIEW_ALL = frozenset(f"{r}:view" for r in RESOURCES)

BUILTIN_ROLES: dict[str, frozenset[str]] = {
    # owner and admin hold every permission; only an owner may change or remove owners
    "owner": ALL_PERMISSIONS,
    "admin": ALL_PERMISSIONS,
    "operator": VIEW_ALL
    | {"instance:create", "instance:edit", "instance:delete", "pool:create", "pool:edit", "image:create"},
    "viewer": VIEW_ALL,
}


def check_permissions(permissions: list[str]) -> frozenset[str]:
    """The permissions as a set; unknown names are a 422."""
    from cloudlet.errors import Invalid

    unknown = sorted(set(permissions) - ALL_PERMISSIONS)
    if unknown:
        raise Invalid(
            f"unknown permission(s) {', '.join(unknown)}; use <resource>:<action> with resource in "
            f"{', '.join(RESOURCES)} and action in {', '.join(ACTIONS)}, or {AUDIT_VIEW}",
            code="invalid_permission",
        )
    return frozenset(permissions)
