"""Running the API server: the daemon's entry point.

`cloudlet server` reaches this without importing the client-side CLI stack (Typer, Rich, httpx),
which would add ~25 MB to a daemon that never uses it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudlet.config import Settings


def parse_args(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="cloudlet server", description="Run the cloudlet API server.")
    parser.add_argument("--host", help="Listen address (default 127.0.0.1).")
    parser.add_argument("--port", type=int, help="Listen port (default 8470).")
    parser.add_argument("--data-dir", type=Path, help="Data directory.")
    parser.add_argument("--database-url", help="SQLAlchemy database URL.")
    parser.add_argument("--config", type=Path, help="TOML config file.")
    return vars(parser.parse_args(argv))


def private_files() -> None:
    """Whatever the server makes is readable by its own user only, unless made otherwise on
    purpose: its data holds tenants' disks and the key that signs sign-ins."""
    from cloudlet.filemodes import private_umask

    private_umask()


def refuse_unsafe_files(settings: Settings, config_file: Path) -> None:
    """Exit with status 2, saying which path and how to fix it, when files cloudlet relies on are
    open to other users and cloudlet cannot close them itself (see ``DataLayout.check``)."""
    from cloudlet.filemodes import DataLayout, UnsafeFiles

    layout = DataLayout(settings.data_dir, settings.effective_database_url, settings.effective_jwt_key_file)
    try:
        layout.check(config_file)
    except UnsafeFiles as err:
        print(f"cloudlet: refusing to start: {err.detail}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def run(argv: list[str]) -> None:
    import uvicorn

    from cloudlet.api.app import create_app
    from cloudlet.config import config_path, load_settings

    private_files()
    args = parse_args(argv)
    config = args.pop("config")
    settings = load_settings(config, **{k: v for k, v in args.items() if v is not None})
    refuse_unsafe_files(settings, config_path(config))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)

    def show_token(token: str) -> None:
        print(f"Admin API token (shown once; only its hash is stored):\n  {token}", flush=True)

    app = create_app(settings, on_admin_token=show_token)
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                app, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on"
            )
        )
    ]
    if settings.oscloud_listen:
        from cloudlet.compat.oscloud import create_oscloud_app

        oc_host, _, oc_port = settings.oscloud_listen.rpartition(":")
        oscloud = create_oscloud_app(app, settings)
        config_ = uvicorn.Config(
            oscloud,
            host=oc_host or "127.0.0.1",
            port=int(oc_port),
            log_level=settings.log_level,
            lifespan="off",
        )
        servers.append(uvicorn.Server(config_))
    print(f"cloudlet listening on http://{settings.host}:{settings.port} (API docs at /docs)", flush=True)

    async def serve_all() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    asyncio.run(serve_all())
