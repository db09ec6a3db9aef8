"""`cloudlet plan -f FILE` and `cloudlet apply -f FILE`: make a workspace match a YAML or JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cloudlet.cli.common import client, console, handle_errors, read_yaml_arg, run_operation, table

FileOption = typer.Option(
    ..., "--file", "-f", help="cloud.yaml (or JSON, or Launch-from-Config JSON); '-' is stdin."
)
SYMBOLS = {
    "create": "+",
    "replace": "±",
    "resize": "~",
    "update": "~",
    "start": "▶",
    "stop": "■",
    "conflict": "!",
}


def show(changes: list[dict[str, Any]]) -> None:
    if not changes:
        console.print("nothing to change: the workspace matches the file")
        return
    table(
        ["", "ACTION", "KIND", "NAME", "DETAIL"],
        [[SYMBOLS.get(c["action"], ""), c["action"], c["kind"], c["name"], c["detail"]] for c in changes],
    )


@handle_errors
def plan(file: Path = FileOption) -> None:
    """Show what `apply` would change; change nothing."""
    with client() as c:
        result = c.apply(read_yaml_arg(file), dry_run=True)
    show(result["changes"])
    if any(ch["action"] == "conflict" for ch in result["changes"]):
        raise typer.Exit(2)


@handle_errors
def apply(file: Path = FileOption) -> None:
    """Make the workspace match the file: create what is missing, resize, start or stop VMs, replace
    changed containers. Nothing the file leaves out is deleted; applying twice changes nothing."""
    with client() as c:
        result = c.apply(read_yaml_arg(file))
        show(result["changes"])
        if result.get("operation"):
            run_operation(c, result["operation"], "applying")
