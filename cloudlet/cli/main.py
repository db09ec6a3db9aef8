"""The `cloudlet` command: the server and admin commands, and client commands over the HTTP API."""

from __future__ import annotations

import typer

from cloudlet.cli import admin, apply, containers, images, networks, pools, storage, tenancy, vms
from cloudlet.cli.common import client, console, err_console, handle_errors

app = typer.Typer(help="cloudlet: VMs and containers from one API.", no_args_is_help=True)
app.add_typer(images.app, name="image")
app.add_typer(networks.app, name="network")
app.add_typer(vms.app, name="vm")
app.add_typer(containers.app, name="ct")
app.add_typer(pools.app, name="pool")
app.add_typer(storage.storage_app, name="storage")
app.add_typer(storage.volume_app, name="volume")
app.add_typer(admin.app, name="admin")
app.add_typer(tenancy.workspace_app, name="workspace")
app.add_typer(tenancy.member_app, name="member")
app.add_typer(tenancy.role_app, name="role")
app.add_typer(tenancy.token_app, name="token")
app.add_typer(tenancy.quota_app, name="quota")
app.add_typer(tenancy.audit_app, name="audit")
app.command("plan")(apply.plan)
app.command("apply")(apply.apply)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
)
def server(ctx: typer.Context) -> None:
    """Run the API server (and the OS Cloud API when configured); --help for its options."""
    from cloudlet.server import run

    run(list(ctx.args))


@app.command()
def login(
    url: str = typer.Option("http://127.0.0.1:8470", help="Server URL."),
    username: str | None = typer.Option(None, "--username", "-u", help="Sign in with a password."),
    token: str | None = typer.Option(None, help="Use an API token instead (prompted if neither is given)."),
    oidc: bool = typer.Option(
        False, "--oidc", help="Sign in in a browser through the server's OIDC provider."
    ),
) -> None:
    """Sign in (password) or check an API token, and save the URL and credentials for later
    commands (a sign-in renews itself with its refresh token)."""
    from cloudlet.client import CONFIG_PATH, Client, save_client_config

    if oidc:
        from cloudlet.cli.oidc_login import browser_login

        try:
            pair = browser_login(url)
        except (TimeoutError, RuntimeError) as err:
            err_console.print(f"[bold red]Error:[/] {err}")
            raise typer.Exit(1) from None
        save_client_config(url, pair["access_token"], refresh_token=pair["refresh_token"])
        console.print(f"logged in to {url}; saved to {CONFIG_PATH}")
        return
    if username is None and token is None:
        token = typer.prompt("API token", hide_input=True)
    password = typer.prompt("password", hide_input=True) if username is not None else None

    @handle_errors
    def check() -> tuple[str, str | None]:
        with Client(url, token or "") as c:
            if username is not None and password is not None:
                pair = c.login(username, password)
                return pair["access_token"], pair["refresh_token"]
            c.info()
            return token or "", None

    secret, refresh = check()
    save_client_config(url, secret, refresh_token=refresh)
    console.print(f"logged in to {url}; saved to {CONFIG_PATH}")


@app.command()
@handle_errors
def info() -> None:
    """Server version, driver health and host capacity."""
    with client() as c:
        data = c.info()
    console.print(f"cloudlet {data['version']}")
    for d in data["drivers"]:
        status = "[green]ok[/]" if d["ok"] else f"[red]unavailable[/]: {d['error']}"
        console.print(f"  {d['name']} {d['version'] or ''}: {status} {d['details']}")
    if data.get("host"):
        h = data["host"]
        console.print(
            f"  host: {h['cpus']} cpus, {h['memory_available_mb']}/{h['memory_total_mb']} MiB available"
        )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise SystemExit(130) from None
