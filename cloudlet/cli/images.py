"""`cloudlet image ...`"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cloudlet.cli.common import (
    client,
    console,
    err_console,
    handle_errors,
    human_bytes,
    run_operation,
    show_fields,
    table,
)

app = typer.Typer(help="VM disk images.", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_images() -> None:
    """List images."""
    with client() as c:
        rows = c.images()
    table(
        ["NAME", "STATUS", "FORMAT", "SIZE", "ON DISK", "SHA256", "ID"],
        [
            [
                i["name"],
                i["status"],
                i["format"],
                human_bytes(i["virtual_size"]),
                human_bytes(i["file_size"]),
                (i["sha256"] or "")[:12],
                i["id"],
            ]
            for i in rows
        ],
    )


@app.command("show")
@handle_errors
def show(ref: str) -> None:
    """Show one image."""
    with client() as c:
        show_fields(
            c.image(ref),
            ["id", "name", "status", "format", "virtual_size", "file_size", "sha256", "source", "created_at"],
        )


@app.command("import")
@handle_errors
def import_image(
    name: str,
    path: Path = typer.Argument(..., help="qcow2 or raw image file."),
    server_path: bool = typer.Option(
        False,
        "--server-path",
        help="PATH is on the server host, in a folder the server allows imports from (no upload).",
    ),
) -> None:
    """Import a disk image: upload a local file (default) or name one on the server host."""
    with client() as c:
        if server_path:
            op = c.import_image(name, str(path), wait=False)
        else:
            with path.open("rb") as fh:
                op = c.upload_image(name, fh, wait=False)
        run_operation(c, op, f"importing {name}")


@app.command("delete")
@handle_errors
def delete(ref: str) -> None:
    """Delete an image (refused while an instance uses it)."""
    with client() as c:
        run_operation(c, c.delete_image(ref, wait=False), f"deleting image {ref}")


def default_cache_dir() -> Path:
    return Path(os.environ.get("CLOUDLET_CACHE_DIR", Path.home() / ".cache" / "cloudlet"))


@app.command("build-tiny")
@handle_errors
def build_tiny(
    name: str = typer.Option("tiny", help="Name of the imported image."),
    do_import: bool = typer.Option(True, "--import/--no-import", help="Upload the image to the server."),
    force: bool = typer.Option(False, help="Rebuild even if a cached image exists."),
) -> None:
    """Build the tiny test guest from Debian packages (cached), then import it."""
    from cloudlet.tinyimage import TinyImageError, build_tiny_image

    try:
        path = build_tiny_image(
            default_cache_dir() / "tiny", force=force, log=lambda m: err_console.print(f"[dim]{m}[/]")
        )
    except TinyImageError as err:
        err_console.print(f"[bold red]Error:[/] building the tiny image failed: {err}")
        raise typer.Exit(1) from None
    console.print(f"tiny image: {path}")
    if do_import:
        with client() as c, path.open("rb") as fh:
            run_operation(c, c.upload_image(name, fh, wait=False), f"importing {name}")
