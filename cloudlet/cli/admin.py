"""`cloudlet admin ...`: server-side bootstrap commands. They open the server's database directly
(same settings as `cloudlet server`), so they work before anyone can sign in."""

from __future__ import annotations

import sys

import typer

from cloudlet.cli.common import console, err_console

app = typer.Typer(help="Server-side admin commands (run on the server host).", no_args_is_help=True)


@app.command("create-user")
def create_user(
    username: str,
    admin: bool = typer.Option(False, "--admin", help="A system admin: all workspaces, users, quotas."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
    workspace: str | None = typer.Option(None, help="Also make the user a member of this workspace."),
    role: str = typer.Option("viewer", help="Their role there: owner, admin, operator, viewer or custom."),
) -> None:
    """Create a local account (argon2id password hash)."""
    from cloudlet.config import load_settings
    from cloudlet.db import migrate
    from cloudlet.db.models import Membership
    from cloudlet.db.session import Database, transaction
    from cloudlet.errors import CloudletError
    from cloudlet.services import users
    from cloudlet.services.auth import ensure_builtin_roles, ensure_default_workspace, find_role
    from cloudlet.services.context import RequestContext
    from cloudlet.services.workspaces import get_workspace

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.effective_database_url)
    try:
        migrate.upgrade(db.engine)
        with transaction(db.sessions) as s:
            ensure_default_workspace(s)
            ensure_builtin_roles(s)
            user = users.create_user(s, username, password, is_admin=admin)
            if workspace:
                system = RequestContext(principal="admin-cli", workspace_id="", is_admin=True)
                ws, _ = get_workspace(s, system, workspace)
                s.add(Membership(workspace_id=ws.id, user_id=user.id, role_id=find_role(s, ws.id, role).id))
    except CloudletError as err:
        err_console.print(f"[bold red]Error:[/] {err.detail} [dim]({err.code})[/]")
        raise typer.Exit(2) from None
    finally:
        db.dispose()
    kind = "system admin" if admin else "user"
    where = f", {role} of {workspace}" if workspace else ""
    console.print(f"created {kind} {username}{where}")
