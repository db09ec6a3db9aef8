"""Running the API server: the daemon's entry point.

`cloudlet server` reaches this without importing the client-side CLI stack (Typer, Rich, httpx),
which would add ~25 MB to a daemon that never uses it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parse_args(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="cloudlet server", description="Run the cloudlet API server.")
    parser.add_argument("--host", help="Listen address (default 127.0.0.1).")
    parser.add_argument("--port", type=int, help="Listen port (default 8470).")
    parser.add_argument("--data-dir", type=Path, help="Data directory.")
    parser.add_argument("--database-url", help="SQLAlchemy database URL.")
    parser.add_argument("--config", type=Path, help="TOML config file.")
    return vars(parser.parse_args(argv))


class HideQueryStrings(logging.Filter):
    """Drop the query string from the request paths uvicorn logs (its access lines, and the
    websocket lines on ``uvicorn.error``): a query may carry a secret (an OIDC code, a token
    a client should not have put there), and a log is read by more people than the API."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(arg) for arg in record.args)
        return True


def _without_query(arg: object) -> object:
    if isinstance(arg, str) and arg.startswith("/") and "?" in arg:
        return arg.split("?", 1)[0]
    return arg


def hide_query_strings() -> None:
    """Install ``HideQueryStrings`` on the loggers every uvicorn listener of the process uses."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, HideQueryStrings) for f in logger.filters):
            logger.addFilter(HideQueryStrings())


def deliver_admin_token(data_dir: Path) -> Callable[[str], None]:
    """How the first start's admin token reaches the person starting the server: printed when
    stdout is a terminal, else (stdout may be a log file) saved to a 0600 file in the data dir,
    whose path alone is logged."""
    from cloudlet.api.app import token_to_file

    def deliver(token: str) -> None:
        if sys.stdout.isatty():
            print(f"Admin API token (shown once; only its hash is stored):\n  {token}", flush=True)
        else:
            token_to_file(data_dir)(token)

    return deliver


def run(argv: list[str]) -> None:
    import uvicorn

    from cloudlet.api.app import create_app
    from cloudlet.config import load_settings

    args = parse_args(argv)
    config = args.pop("config")
    settings = load_settings(config, **{k: v for k, v in args.items() if v is not None})
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)

    app = create_app(settings, on_admin_token=deliver_admin_token(settings.data_dir))
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                app, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on"
            )
        )
    ]
    if settings.oscloud_listen:
        from cloudlet.api.limits import BodyLimit
        from cloudlet.compat.oscloud import create_oscloud_app

        oc_host, _, oc_port = settings.oscloud_listen.rpartition(":")
        oscloud = BodyLimit(create_oscloud_app(app, settings))
        config_ = uvicorn.Config(
            oscloud,
            host=oc_host or "127.0.0.1",
            port=int(oc_port),
            log_level=settings.log_level,
            lifespan="off",
        )
        servers.append(uvicorn.Server(config_))
    hide_query_strings()  # after the listeners' configs, which set uvicorn's logging up
    print(f"cloudlet listening on http://{settings.host}:{settings.port} (API docs at /docs)", flush=True)

    async def serve_all() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    asyncio.run(serve_all())
