"""The `cloudlet` command: the server and admin commands, and client commands over the HTTP API."""

from __future__ import annotations

import typer

from cloudlet.cli import containers, images, networks, vms
from cloudlet.cli.common import client, console, err_console, handle_errors

app = typer.Typer(help="cloudlet: VMs and containers from one API.", no_args_is_help=True)
app.add_typer(images.app, name="image")
app.add_typer(networks.app, name="network")
app.add_typer(vms.app, name="vm")
app.add_typer(containers.app, name="ct")


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
    token: str = typer.Option(..., prompt=True, hide_input=True, help="API token."),
) -> None:
    """Check a token against the server and save URL and token for later commands."""
    from cloudlet.client import CONFIG_PATH, Client, save_client_config

    @handle_errors
    def check() -> None:
        with Client(url, token) as c:
            c.info()

    check()
    save_client_config(url, token)
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
