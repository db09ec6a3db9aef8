"""Running the API server: the daemon's entry point.

`cloudlet server` reaches this without importing the client-side CLI stack (Typer, Rich, httpx),
which would add ~25 MB to a daemon that never uses it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

    from cloudlet.compat.guard import Listen
    from cloudlet.config import Settings


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


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's forwarded-header options for every listener: X-Forwarded-For/-Proto are believed
    only from ``trusted_proxies``. uvicorn's own default trusts them from loopback, which would
    let any local client pick the address that sign-in throttling and the audit log see."""
    if not settings.trusted_proxies:
        return {"proxy_headers": False, "forwarded_allow_ips": []}
    return {"proxy_headers": True, "forwarded_allow_ips": list(settings.trusted_proxies)}


@dataclass(frozen=True)
class CompatListener:
    """An API of a system cloudlet replaces, on a listener of its own: where it listens (which
    refuses unsafe settings) and the app it serves there."""

    name: str
    address: Callable[[Settings], Listen]
    make_app: Callable[[Any, Settings], Any]


def compat_listeners(settings: Settings) -> list[CompatListener]:
    """The compat listeners the settings turn on."""
    listeners = []
    if settings.oscloud_listen:
        from cloudlet.compat.oscloud import create_oscloud_app, oscloud_listen

        listeners.append(CompatListener("OS Cloud", oscloud_listen, create_oscloud_app))
    if settings.reservation_listen:
        from cloudlet.compat.reservation import create_reservation_app, reservation_listen

        listeners.append(CompatListener("reservation system", reservation_listen, create_reservation_app))
    return listeners


def compat_address(listener: CompatListener, settings: Settings) -> Listen:
    """Where a compat API will listen; the server does not start on an unsafe setting."""
    from cloudlet.compat.guard import UnsafeListener

    try:
        return listener.address(settings)
    except UnsafeListener as err:
        raise SystemExit(f"cloudlet: {err}") from None


def compat_server(listener: CompatListener, app: Any, settings: Settings) -> uvicorn.Server:
    """A compat API's listener: loopback unless configured otherwise, behind its guard, its
    bodies limited like every listener's."""
    import uvicorn

    from cloudlet.api.limits import BodyLimit

    listen = compat_address(listener, settings)
    config = uvicorn.Config(
        BodyLimit(listener.make_app(app, settings)),
        host=listen.host,
        port=listen.port,
        log_level=settings.log_level,
        lifespan="off",
        **proxy_options(settings),
    )
    return uvicorn.Server(config)


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
    compat = compat_listeners(settings)
    for listener in compat:
        compat_address(listener, settings)  # refuse an unsafe listener before touching anything

    app = create_app(settings, on_admin_token=deliver_admin_token(settings.data_dir))
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.host,
                port=settings.port,
                log_level=settings.log_level,
                lifespan="on",
                **proxy_options(settings),
            )
        )
    ]
    servers += [compat_server(listener, app, settings) for listener in compat]
    hide_query_strings()  # after the listeners' configs, which set uvicorn's logging up
    print(f"cloudlet listening on http://{settings.host}:{settings.port} (API docs at /docs)", flush=True)
    for listener in compat:
        where = listener.address(settings)
        print(f"the {listener.name} API on http://{where.host}:{where.port}", flush=True)

    async def serve_all() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    asyncio.run(serve_all())
