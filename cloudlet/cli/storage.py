"""`cloudlet storage pool ...`, `cloudlet volume ...` and `cloudlet vm volume ...`."""

from __future__ import annotations

from typing import Any

import typer

from cloudlet.cli.common import client, console, handle_errors, human_bytes, run_operation, show_fields, table

storage_app = typer.Typer(help="Storage pools (system admins manage them).", no_args_is_help=True)
pool_app = typer.Typer(help="Host-wide storage pools that volumes are made in.", no_args_is_help=True)
storage_app.add_typer(pool_app, name="pool")
volume_app = typer.Typer(help="Volumes: extra disks that attach to VMs.", no_args_is_help=True)
vm_volume_app = typer.Typer(help="Attach volumes to a VM and detach them.", no_args_is_help=True)

VOLUME_FIELDS = [
    "id",
    "name",
    "size",
    "allocation",
    "pool",
    "status",
    "attached_to",
    "target",
    "serial",
    "created_at",
]


@pool_app.command("list")
@handle_errors
def pool_list() -> None:
    """Storage pools with their capacity and free space."""
    with client() as c:
        rows = c.storage_pools()
    table(
        ["NAME", "KIND", "STATUS", "CAPACITY", "ALLOCATED", "AVAILABLE", "VOLUMES", "PATH", "DEFAULT"],
        [
            [
                p["name"],
                p["kind"],
                p["status"],
                human_bytes(p["capacity"]),
                human_bytes(p["allocation"]),
                human_bytes(p["available"]),
                p["volumes"],
                _where(p),
                "yes" if p["default"] else "",
            ]
            for p in rows
        ],
    )


def _where(pool: dict[str, Any]) -> str:
    if pool.get("source_host"):
        return f"{pool['source_host']}:{pool['source_path']} on {pool['path']}"
    return str(pool.get("path") or "")


@pool_app.command("create")
@handle_errors
def pool_create(
    name: str,
    path: str = typer.Option(..., help="Host folder (dir) or mount point (netfs), absolute."),
    kind: str = typer.Option("dir", help="dir or netfs."),
    nfs_host: str | None = typer.Option(None, "--nfs-host", help="netfs: the NFS server."),
    nfs_export: str | None = typer.Option(None, "--nfs-export", help="netfs: the exported folder."),
) -> None:
    """Add a storage pool (system admins)."""
    with client() as c:
        op = c.create_storage_pool(name, path, kind, nfs_host, nfs_export, wait=False)
        run_operation(c, op, f"creating storage pool {name}")


@pool_app.command("delete")
@handle_errors
def pool_delete(name: str) -> None:
    """Remove a storage pool that holds no volumes (system admins); its files stay."""
    with client() as c:
        run_operation(c, c.delete_storage_pool(name, wait=False), f"deleting storage pool {name}")


@volume_app.command("create")
@handle_errors
def volume_create(
    name: str,
    size: int = typer.Option(..., "--size", "-s", help="GiB."),
    pool: str | None = typer.Option(None, help="Storage pool (default: the default pool)."),
) -> None:
    """Create an empty volume."""
    with client() as c:
        run_operation(c, c.create_volume(name, size, pool, wait=False), f"creating volume {name}")


@volume_app.command("list")
@handle_errors
def volume_list() -> None:
    """The workspace's volumes."""
    with client() as c:
        rows = c.volumes()
    table(
        ["NAME", "SIZE", "ALLOCATED", "POOL", "STATUS", "ATTACHED TO", "DISK", "ID"],
        [
            [
                v["name"],
                f"{v['size']} GiB",
                human_bytes(v["allocation"]),
                v["pool"],
                v["status"],
                v["attached_to"],
                v["target"],
                v["id"],
            ]
            for v in rows
        ],
    )


@volume_app.command("show")
@handle_errors
def volume_show(ref: str) -> None:
    """Show one volume."""
    with client() as c:
        show_fields(c.volume(ref), VOLUME_FIELDS)


@volume_app.command("resize")
@handle_errors
def volume_resize(ref: str, size: int = typer.Option(..., "--size", "-s", help="New size in GiB.")) -> None:
    """Grow a volume (also while a running VM uses it)."""
    with client() as c:
        run_operation(c, c.resize_volume(ref, size, wait=False), f"resizing volume {ref}")


@volume_app.command("delete")
@handle_errors
def volume_delete(ref: str) -> None:
    """Delete a detached volume and its data."""
    with client() as c:
        run_operation(c, c.delete_volume(ref, wait=False), f"deleting volume {ref}")


@vm_volume_app.command("attach")
@handle_errors
def vm_volume_attach(vm: str, volume: str) -> None:
    """Attach a volume to a VM (hot-plugged while it runs)."""
    with client() as c:
        done = run_operation(c, c.attach_volume(vm, volume, wait=False), f"attaching {volume} to {vm}")
    console.print(f"{volume} is disk {(done.get('result') or {}).get('target')} of {vm}")


@vm_volume_app.command("detach")
@handle_errors
def vm_volume_detach(vm: str, volume: str) -> None:
    """Detach a volume from a VM; it keeps its data."""
    with client() as c:
        run_operation(c, c.detach_volume(vm, volume, wait=False), f"detaching {volume} from {vm}")


@vm_volume_app.command("list")
@handle_errors
def vm_volume_list(vm: str) -> None:
    """The volumes attached to a VM."""
    with client() as c:
        rows = c.instance_volumes(vm)
    table(
        ["DISK", "NAME", "SIZE", "SERIAL", "STATUS"],
        [[v["target"], v["name"], f"{v['size']} GiB", v["serial"], v["status"]] for v in rows],
    )
