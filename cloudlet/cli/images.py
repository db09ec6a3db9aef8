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

app = typer.Typer(help="VM images: disks (qcow2, raw) and installer ISOs.", no_args_is_help=True)

FORMAT_HELP = "qcow2, raw or iso; detected when left out, refused when the file is something else."
OS_HELP = "The guest OS (free text or a short id such as debian12)."
MIN_DISK_HELP = "Smallest disk, in GiB, a VM of this image gets."
MIN_MEMORY_HELP = "Least memory, in MiB, a VM of this image gets."


@app.command("list")
@handle_errors
def list_images() -> None:
    """List images."""
    with client() as c:
        rows = c.images()
    table(
        ["NAME", "STATUS", "FORMAT", "OS", "SIZE", "ON DISK", "SHA256", "ID"],
        [
            [
                i["name"],
                i["status"],
                i["format"],
                i.get("os"),
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
            [
                "id",
                "name",
                "status",
                "kind",
                "format",
                "os",
                "min_disk",
                "min_memory",
                "virtual_size",
                "file_size",
                "sha256",
                "source",
                "public",
                "created_at",
            ],
        )


@app.command("import")
@handle_errors
def import_image(
    name: str,
    path: Path | None = typer.Argument(None, help="qcow2, raw or ISO file (leave out with --url)."),
    url: str | None = typer.Option(
        None, "--url", help="Have the server download the image from this http(s) URL."
    ),
    sha256: str | None = typer.Option(None, "--sha256", help="Expected sha256 of the download (hex)."),
    server_path: bool = typer.Option(
        False,
        "--server-path",
        help="PATH is on the server host, in a folder the server allows imports from (no upload).",
    ),
    fmt: str | None = typer.Option(None, "--format", help=FORMAT_HELP),
    os_name: str | None = typer.Option(None, "--os", help=OS_HELP),
    min_disk: int | None = typer.Option(None, "--min-disk", help=MIN_DISK_HELP),
    min_memory: int | None = typer.Option(None, "--min-memory", help=MIN_MEMORY_HELP),
) -> None:
    """Import an image: upload a local file (default), name one on the server host, or have the
    server download one (--url), with a progress bar."""
    if sha256 is not None and url is None:
        raise typer.BadParameter("--sha256 checks downloads (--url) only")
    options: dict[str, str | int | None] = {
        "format": fmt,
        "os": os_name,
        "min_disk": min_disk,
        "min_memory": min_memory,
    }
    with client() as c:
        if url is not None and path is None:
            op = c.import_url(name, url, sha256, wait=False, **options)
        elif path is not None and url is None and server_path:
            op = c.import_image(name, str(path), wait=False, **options)
        elif path is not None and url is None:
            with path.open("rb") as fh:
                op = c.upload_image(name, fh, wait=False, **options)
        else:
            raise typer.BadParameter("give either PATH or --url")
        done = run_operation(c, op, f"importing {name}")
    result = done.get("result") or {}
    console.print(f"{name}: {result.get('format')}, sha256 {result.get('sha256')}", soft_wrap=True)


@app.command("set")
@handle_errors
def set_properties(
    ref: str,
    os_name: str | None = typer.Option(None, "--os", help=OS_HELP + ' "" clears it.'),
    min_disk: int | None = typer.Option(None, "--min-disk", help=MIN_DISK_HELP + " 0 clears it."),
    min_memory: int | None = typer.Option(None, "--min-memory", help=MIN_MEMORY_HELP + " 0 clears it."),
) -> None:
    """Set an image's properties (the ones given), checked when a VM is created from it."""
    fields: dict[str, str | int | None] = {}
    if os_name is not None:
        fields["os"] = os_name or None
    if min_disk is not None:
        fields["min_disk"] = min_disk or None
    if min_memory is not None:
        fields["min_memory"] = min_memory or None
    if not fields:
        raise typer.BadParameter("give --os, --min-disk or --min-memory")
    with client() as c:
        image = c.update_image(ref, **fields)
    show_fields(image, ["name", "os", "min_disk", "min_memory"])


@app.command("publish")
@handle_errors
def publish(
    vm: str,
    name: str,
    os_name: str | None = typer.Option(None, "--os", help=OS_HELP + " Default: the VM's image's."),
    min_memory: int | None = typer.Option(None, "--min-memory", help=MIN_MEMORY_HELP),
) -> None:
    """Make a new image of a stopped VM's disk."""
    with client() as c:
        op = c.publish_instance(vm, name, wait=False, os=os_name, min_memory=min_memory)
        run_operation(c, op, f"publishing {vm} as {name}")


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
