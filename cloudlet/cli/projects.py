"""`cloudlet ct project ...`: Dockerfile projects, edited on the server through the API."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import typer

from cloudlet.cli.common import client, console, err_console, handle_errors, human_bytes, show_fields, table
from cloudlet.client import ApiError

app = typer.Typer(
    help="Dockerfile projects: a Dockerfile and its files, kept on the server to build images from.",
    no_args_is_help=True,
)


def editor_command(env: Mapping[str, str]) -> list[str]:
    """The user's editor as argv: $VISUAL, then $EDITOR (both may carry options), then vi."""
    for var in ("VISUAL", "EDITOR"):
        if value := env.get(var, "").strip():
            return shlex.split(value)
    return ["vi"]


@app.command("create")
@handle_errors
def create(
    name: str,
    dockerfile: Path | None = typer.Option(
        None, "--dockerfile", exists=True, dir_okay=False, help="A local file to store as the Dockerfile."
    ),
) -> None:
    """Create a project, empty or with a Dockerfile."""
    content = None
    if dockerfile is not None:
        try:
            content = dockerfile.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            err_console.print(f"[bold red]Error:[/] {dockerfile} is not UTF-8 text")
            raise typer.Exit(2) from None
    with client() as c:
        c.create_project(name, content)
    console.print(f"created project {name}")


@app.command("list")
@handle_errors
def list_projects() -> None:
    """List projects."""
    with client() as c:
        rows = c.projects()
    table(
        ["NAME", "FILES", "SIZE", "UPDATED"],
        [[p["name"], p["file_count"], human_bytes(p["total_bytes"]), p["updated_at"]] for p in rows],
    )


@app.command("show")
@handle_errors
def show(name: str) -> None:
    """Show a project and its files."""
    with client() as c:
        project = c.project(name)
    show_fields(project, ["name", "file_count", "total_bytes", "updated_at"])
    table(
        ["PATH", "SIZE", "MODIFIED"],
        [[f["path"], human_bytes(f["size"]), f["modified_at"]] for f in project["files"]],
    )


@app.command("delete")
@handle_errors
def delete(name: str) -> None:
    """Delete a project and all its files."""
    with client() as c:
        c.delete_project(name)
    console.print(f"deleted project {name}")


@app.command("cat")
@handle_errors
def cat(name: str, path: str) -> None:
    """Print a file of a project, byte for byte."""
    with client() as c:
        data = c.project_file(name, path)
    typer.echo(data, nl=False)


@app.command("put")
@handle_errors
def put(
    name: str,
    path: str = typer.Argument(..., help="Path in the project, '/'-separated, e.g. app/main.py."),
    source: Path | None = typer.Option(
        None, "--from", exists=True, dir_okay=False, help="Local file to upload; default: standard input."
    ),
) -> None:
    """Create or replace a file of a project (at most 10 MiB)."""
    if source is not None:
        content = source.read_bytes()
    else:
        stdin = typer.get_binary_stream("stdin")
        if stdin.isatty():
            err_console.print("[dim]reading the content from standard input; end with Ctrl-D[/]")
        content = stdin.read()
    with client() as c:
        stored = c.put_project_file(name, path, content)
    console.print(f"wrote {stored['path']} ({human_bytes(stored['size'])})")


@app.command("rm")
@handle_errors
def rm(name: str, path: str) -> None:
    """Delete a file of a project."""
    with client() as c:
        c.delete_project_file(name, path)
    console.print(f"removed {path}")


@app.command("edit")
@handle_errors
def edit(name: str, path: str = typer.Argument("Dockerfile", help="File to edit; made if missing.")) -> None:
    """Edit a file in $VISUAL or $EDITOR (vi by default); it is uploaded only if it changed."""
    with client() as c:
        try:
            before = c.project_file(name, path)
        except ApiError as err:
            if err.code != "file_not_found":
                raise
            before = b""
        with tempfile.TemporaryDirectory(prefix="cloudlet-edit-") as tmp:
            # Keep the file's own name, so the editor picks the right syntax highlighting.
            local = Path(tmp) / (PurePosixPath(path).name or "file")
            local.write_bytes(before)
            try:
                done = subprocess.run([*editor_command(os.environ), str(local)], check=False)
            except FileNotFoundError as err:
                err_console.print(f"[bold red]Error:[/] cannot run the editor: {err}")
                raise typer.Exit(1) from None
            if done.returncode != 0:
                err_console.print(
                    f"[bold red]Error:[/] the editor exited with {done.returncode}; nothing saved"
                )
                raise typer.Exit(1)
            after = local.read_bytes()
        if after == before:
            console.print(f"{path}: no changes")
            return
        stored = c.put_project_file(name, path, after)
    console.print(f"saved {stored['path']} ({human_bytes(stored['size'])})")
