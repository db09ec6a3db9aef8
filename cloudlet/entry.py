"""The `cloudlet` console script. It picks the daemon or the client CLI before importing either,
so the long-running server never loads the CLI's Typer/Rich/httpx stack (~25 MB of RSS)."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["server"]:
        from cloudlet.server import run

        run(sys.argv[2:])
        return
    from cloudlet.cli.main import main as cli_main

    cli_main()
