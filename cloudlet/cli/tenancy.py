"""`cloudlet workspace|member|role|token|quota|audit ...`: who may do what, where."""

from __future__ import annotations

import sys

import typer

from cloudlet.cli.common import client, console, handle_errors, table
from cloudlet.client import Client

workspace_app = typer.Typer(help="Workspaces you belong to.", no_args_is_help=True)
member_app = typer.Typer(help="Members of a workspace and their roles.", no_args_is_help=True)
role_app = typer.Typer(help="Built-in and custom roles.", no_args_is_help=True)
token_app = typer.Typer(help="Your API tokens.", no_args_is_help=True)
quota_app = typer.Typer(help="Workspace quotas and usage.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace (default: your current one).")


def _ws(c: Client, workspace: str | None) -> str:
    """The workspace named, or the one the server puts this caller in."""
    if workspace or c.workspace:
        return str(workspace or c.workspace)
    return str(c.request("GET", "/auth/me")["workspace_id"])


@workspace_app.command("list")
@handle_errors
def workspace_list() -> None:
    """Your workspaces and your role in each."""
    with client() as c:
        rows = c.request("GET", "/workspaces")
    table(["NAME", "ROLE", "ID"], [[w["name"], w["role"], w["id"]] for w in rows])


@workspace_app.command("create")
@handle_errors
def workspace_create(name: str) -> None:
    """Make a workspace; you become its owner."""
    with client() as c:
        ws = c.request("POST", "/workspaces", json={"name": name})
    console.print(f"created workspace {ws['name']} ({ws['id']})")


@workspace_app.command("delete")
@handle_errors
def workspace_delete(name: str) -> None:
    """Delete an empty workspace (owners)."""
    with client() as c:
        c.request("DELETE", f"/workspaces/{name}")
    console.print(f"deleted workspace {name}")


@workspace_app.command("use")
@handle_errors
def workspace_use(name: str) -> None:
    """Make a workspace the default of later commands (signed-in users)."""
    from cloudlet.client import save_client_config

    with client() as c:
        c.request("GET", f"/workspaces/{name}")
        save_client_config(c.url, c.token or "", refresh_token=c.refresh_token, workspace=name)
    console.print(f"now working in {name}")


@member_app.command("list")
@handle_errors
def member_list(workspace: str | None = WorkspaceOpt) -> None:
    with client() as c:
        rows = c.request("GET", f"/workspaces/{_ws(c, workspace)}/members")
    table(["USER", "ROLE", "SINCE"], [[m["username"], m["role"], m["since"]] for m in rows])


@member_app.command("add")
@handle_errors
def member_add(
    username: str, role: str = typer.Option("viewer"), workspace: str | None = WorkspaceOpt
) -> None:
    with client() as c:
        c.request(
            "POST", f"/workspaces/{_ws(c, workspace)}/members", json={"username": username, "role": role}
        )
    console.print(f"{username} is now {role}")


@member_app.command("set-role")
@handle_errors
def member_set_role(username: str, role: str, workspace: str | None = WorkspaceOpt) -> None:
    with client() as c:
        c.request("PATCH", f"/workspaces/{_ws(c, workspace)}/members/{username}", json={"role": role})
    console.print(f"{username} is now {role}")


@member_app.command("remove")
@handle_errors
def member_remove(username: str, workspace: str | None = WorkspaceOpt) -> None:
    with client() as c:
        c.request("DELETE", f"/workspaces/{_ws(c, workspace)}/members/{username}")
    console.print(f"removed {username}")


@role_app.command("list")
@handle_errors
def role_list(workspace: str | None = WorkspaceOpt) -> None:
    with client() as c:
        rows = c.request("GET", f"/workspaces/{_ws(c, workspace)}/roles")
    table(
        ["ROLE", "KIND", "PERMISSIONS"],
        [[r["name"], "built-in" if r["builtin"] else "custom", " ".join(r["permissions"])] for r in rows],
    )


@role_app.command("create")
@handle_errors
def role_create(
    name: str,
    permission: list[str] = typer.Option(..., "--permission", "-p", help="e.g. instance:view (repeatable)."),
    workspace: str | None = WorkspaceOpt,
) -> None:
    with client() as c:
        c.request(
            "POST", f"/workspaces/{_ws(c, workspace)}/roles", json={"name": name, "permissions": permission}
        )
    console.print(f"created role {name}")


@role_app.command("delete")
@handle_errors
def role_delete(name: str, workspace: str | None = WorkspaceOpt) -> None:
    with client() as c:
        c.request("DELETE", f"/workspaces/{_ws(c, workspace)}/roles/{name}")
    console.print(f"deleted role {name}")


@token_app.command("list")
@handle_errors
def token_list() -> None:
    with client() as c:
        rows = c.request("GET", "/tokens")
    table(
        ["NAME", "PREFIX", "ROLE", "EXPIRES", "LAST USED", "REVOKED", "ID"],
        [
            [t["name"], t["prefix"], t["role"], t["expires_at"], t["last_used_at"], t["revoked_at"], t["id"]]
            for t in rows
        ],
    )


@token_app.command("create")
@handle_errors
def token_create(
    name: str,
    role: str = typer.Option("viewer", help="At most your own role."),
    workspace: str | None = WorkspaceOpt,
    days: int | None = typer.Option(90, help="Days until it expires; 0 for never."),
) -> None:
    """Make an API token; its secret is printed once, to stdout."""
    body = {"name": name, "role": role, "workspace": workspace, "expires_in_days": days or None}
    with client() as c:
        made = c.request("POST", "/tokens", json=body)
    sys.stderr.write(f"token {name} ({made['role']}); the secret is shown this once:\n")
    print(made["token"])


@token_app.command("revoke")
@handle_errors
def token_revoke(ref: str) -> None:
    with client() as c:
        c.request("DELETE", f"/tokens/{ref}")
    console.print(f"revoked {ref}")


@quota_app.command("show")
@handle_errors
def quota_show(workspace: str | None = WorkspaceOpt) -> None:
    with client() as c:
        q = c.request("GET", f"/workspaces/{_ws(c, workspace)}/quota")
    table(
        ["RESOURCE", "USED", "LIMIT"],
        [[k, q["usage"].get(k), "unlimited" if v is None else v] for k, v in q["limits"].items()],
    )


@quota_app.command("set")
@handle_errors
def quota_set(
    limits: list[str] = typer.Argument(..., help="NAME=N or NAME=none, e.g. instances=10 memory_mb=16384"),
    workspace: str | None = WorkspaceOpt,
) -> None:
    """Set limits (system admins)."""
    body: dict[str, int | None] = {}
    for item in limits:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: use NAME=N or NAME=none")
        try:
            body[key] = None if value.lower() in ("none", "unlimited", "") else int(value)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: the limit must be a whole number or none") from None
    with client() as c:
        c.request("PUT", f"/workspaces/{_ws(c, workspace)}/quota", json=body)
    quota_show(workspace)


@audit_app.command("list")
@handle_errors
def audit_list(
    workspace: str | None = typer.Option(None, "--workspace", "-w"),
    action: str | None = typer.Option(None, help="Only actions containing this."),
    limit: int = typer.Option(50),
) -> None:
    params: dict[str, object] = {"limit": limit}
    if workspace:
        params["workspace"] = workspace
    if action:
        params["action"] = action
    with client() as c:
        rows = c.request("GET", "/audit", params=params)
    table(
        ["WHEN", "WHO", "ACTION", "TARGET", "STATUS", "FROM"],
        [[r["at"], r["principal"], r["action"], r["target"], r["status"], r["source"]] for r in rows],
    )


@audit_app.command("export")
@handle_errors
def audit_export(workspace: str | None = typer.Option(None, "--workspace", "-w")) -> None:
    """Every entry as JSON lines, to stdout."""
    with client() as c:
        for chunk in c._stream("/audit/export", {"workspace": workspace} if workspace else {}):
            sys.stdout.buffer.write(chunk)
