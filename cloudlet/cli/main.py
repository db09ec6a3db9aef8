"""The `cloudlet` command: the server and admin commands, and client commands over the HTTP API."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from cloudlet.cli import images, networks, vms
from cloudlet.cli.common import client, console, err_console, handle_errors

app = typer.Typer(help="cloudlet: VMs and containers from one API.", no_args_is_help=True)
app.add_typer(images.app, name="image")
app.add_typer(networks.app, name="network")
app.add_typer(vms.app, name="vm")


@app.command()
def server(
    host: str | None = typer.Option(None, help="Listen address (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Listen port (default 8470)."),
    data_dir: Path | None = typer.Option(None, help="Data directory."),
    database_url: str | None = typer.Option(None, help="SQLAlchemy database URL."),
    config: Path | None = typer.Option(None, help="TOML config file."),
) -> None:
    """Run the API server (and the OS Cloud API when configured)."""
    import uvicorn

    from cloudlet.api.app import create_app
    from cloudlet.config import load_settings

    overrides = {
        k: v
        for k, v in {"host": host, "port": port, "data_dir": data_dir, "database_url": database_url}.items()
        if v is not None
    }
    settings = load_settings(config, **overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)

    def show_token(token: str) -> None:
        print(f"Admin API token (shown once; only its hash is stored):\n  {token}", flush=True)

    app_ = create_app(settings, on_admin_token=show_token)
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                app_, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on"
            )
        )
    ]
    if settings.oscloud_listen:
        from cloudlet.compat.oscloud import create_oscloud_app

        oc_host, _, oc_port = settings.oscloud_listen.rpartition(":")
        servers.append(
            uvicorn.Server(
                uvicorn.Config(
                    create_oscloud_app(app_, settings),
                    host=oc_host or "127.0.0.1",
                    port=int(oc_port),
                    log_level=settings.log_level,
                    lifespan="off",
                )
            )
        )
    print(f"cloudlet listening on http://{settings.host}:{settings.port} (API docs at /docs)", flush=True)

    async def serve_all() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    asyncio.run(serve_all())


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
