"""`cloudlet plan -f FILE` and `cloudlet apply -f FILE`: make a workspace match a YAML or JSON file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
import yaml

from cloudlet.cli.common import client, console, handle_errors, run_operation, table

FileOption = typer.Option(
    ..., "--file", "-f", help="cloud.yaml (or JSON, or Launch-from-Config JSON); '-' is stdin."
)
SYMBOLS = {"create": "+", "replace": "±", "resize": "~", "start": "▶", "stop": "■", "conflict": "!"}


def read_document(path: Path) -> Any:
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    try:
        return json.loads(text) if text.lstrip()[:1] in ("{", "[") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise typer.BadParameter(f"{path} is neither valid YAML nor JSON: {err}") from None


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
        result = c.apply(read_document(file), dry_run=True)
    show(result["changes"])
    if any(ch["action"] == "conflict" for ch in result["changes"]):
        raise typer.Exit(2)


@handle_errors
def apply(file: Path = FileOption) -> None:
    """Make the workspace match the file: create what is missing, resize, start or stop VMs, replace
    changed containers. Nothing the file leaves out is deleted; applying twice changes nothing."""
    with client() as c:
        result = c.apply(read_document(file))
        show(result["changes"])
        if result.get("operation"):
            run_operation(c, result["operation"], "applying")
