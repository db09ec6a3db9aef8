"""`cloudlet pool ...`: reservation pools of ready VMs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cloudlet.cli.common import client, console, handle_errors, show_fields, table

app = typer.Typer(help="Reservation pools: check out a ready VM, check it back in.", no_args_is_help=True)


@app.command("create")
@handle_errors
def create(
    name: str,
    image: str = typer.Option(..., "--image", "-i"),
    cpus: int = typer.Option(1),
    memory: int = typer.Option(512, help="MiB"),
    disk: int = typer.Option(1, help="GiB"),
    network: str = typer.Option("default"),
    ssh_key_file: list[Path] = typer.Option([], "--ssh-key-file", help="Public keys for root (repeatable)."),
    min_ready: int = typer.Option(1, help="Booted VMs kept waiting."),
    max_size: int = typer.Option(5, help="Hard limit on the pool's VMs."),
    lease: int = typer.Option(3600, help="Default lease, seconds."),
    lease_max: int = typer.Option(86400, help="Longest lease, seconds from checkout."),
    on_checkin: str = typer.Option("reset", help="reset | reuse | destroy"),
    idle_timeout: int | None = typer.Option(None, help="Seconds an extra VM may wait unused."),
    user_data: Path | None = typer.Option(None, help="cloud-init user-data file (#cloud-config or #!)."),
    ssh_user: str = typer.Option("root", help="The user holders log in as (told at checkout)."),
    probe_port: int = typer.Option(22, help="A VM is available once this TCP port answers; 0: once it runs."),
    legacy_api: bool = typer.Option(False, help="Also serve the replaced reservation system's API."),
) -> None:
    """Make a pool; its controller boots min_ready VMs."""
    keys = [line.strip() for p in ssh_key_file for line in p.read_text().splitlines() if line.strip()]
    body = {
        "name": name,
        "template": {
            "image": image,
            "cpus": cpus,
            "memory": memory,
            "disk": disk,
            "network": network,
            "ssh_keys": keys,
            "user_data": user_data.read_text() if user_data else None,
            "ssh_user": ssh_user,
            "probe_port": probe_port or None,
        },
        "min_ready": min_ready,
        "max_size": max_size,
        "lease_default": lease,
        "lease_max": lease_max,
        "on_checkin": on_checkin,
        "idle_timeout": idle_timeout,
        "legacy_api": legacy_api,
    }
    with client() as c:
        pool = c.request("POST", "/pools", json=body)
    console.print(f"created pool {pool['name']}: {min_ready} ready VM(s) on the way")


@app.command("set")
@handle_errors
def set_(
    name: str,
    image: str | None = typer.Option(None, "--image", "-i"),
    cpus: int | None = typer.Option(None),
    memory: int | None = typer.Option(None, help="MiB"),
    disk: int | None = typer.Option(None, help="GiB"),
    min_ready: int | None = typer.Option(None, help="Booted VMs kept waiting."),
    max_size: int | None = typer.Option(None, help="Hard limit; ready VMs above it are retired."),
    lease: int | None = typer.Option(None, help="Default lease, seconds."),
    lease_max: int | None = typer.Option(None, help="Longest lease, seconds from checkout."),
    on_checkin: str | None = typer.Option(None, help="reset | reuse | destroy"),
) -> None:
    """Change a pool in place; what is not given stays. VMs made from now on follow a changed
    template; the ones it holds keep theirs until they are checked in and reset."""
    with client() as c:
        pool = c.request("GET", f"/pools/{name}")
        template = dict(pool["template"])
        given = {"image": image, "cpus": cpus, "memory": memory, "disk": disk}
        template.update({k: v for k, v in given.items() if v is not None})
        settings = {
            "min_ready": min_ready,
            "max_size": max_size,
            "lease_default": lease,
            "lease_max": lease_max,
            "on_checkin": on_checkin,
        }
        body = {
            "name": pool["name"],
            "template": template,
            **{k: pool[k] for k in ("min_ready", "max_size", "lease_default", "lease_max", "on_checkin")},
            "idle_timeout": pool["idle_timeout"],
            "legacy_api": pool["legacy_api"],
            **{k: v for k, v in settings.items() if v is not None},
        }
        changed = c.request("PUT", f"/pools/{pool['id']}", json=body)
    console.print(
        f"pool {changed['name']}: {changed['min_ready']}-{changed['max_size']} x "
        f"{changed['template']['image']} ({changed['template']['memory']} MiB)"
    )


@app.command("list")
@handle_errors
def list_pools() -> None:
    with client() as c:
        rows = c.request("GET", "/pools")
    table(
        ["NAME", "IMAGE", "AVAILABLE", "CHECKED OUT", "PROVISIONING", "MIN", "MAX", "ON CHECKIN"],
        [_row(p) for p in rows],
    )


def _row(p: dict[str, Any]) -> list[object]:
    counts = p["counts"]
    return [
        p["name"],
        p["template"]["image"],
        counts.get("available", 0),
        counts.get("checked-out", 0),
        counts.get("provisioning", 0),
        p["min_ready"],
        p["max_size"],
        p["on_checkin"],
    ]


@app.command("show")
@handle_errors
def show(name: str) -> None:
    """A pool and the status of each of its VMs."""
    with client() as c:
        pool = c.request("GET", f"/pools/{name}")
    show_fields(
        pool,
        [
            "name",
            "id",
            "min_ready",
            "max_size",
            "lease_default",
            "lease_max",
            "on_checkin",
            "idle_timeout",
            "legacy_api",
        ],
    )
    table(
        ["VM", "IP", "STATUS", "HOLDER", "LEASE ENDS"],
        [[v["name"], v["ip"], v["status"], v["holder"], v["lease_expires_at"]] for v in pool["vms"]],
    )


@app.command("checkout")
@handle_errors
def checkout(
    name: str,
    lease: int | None = typer.Option(None, help="Seconds (default: the pool's)."),
    wait: float = typer.Option(0, help="Wait in line up to this many seconds."),
) -> None:
    """Check out a ready VM; prints its IP (stdout) and details (stderr)."""
    with client() as c:
        got = c.request(
            "POST", f"/pools/{name}/checkout", json={"lease": lease}, params={"wait": wait}, timeout=wait + 30
        )
    console.print(
        f"{got['name']} ({got['id']}) ssh {got['ssh_user']}@{got['ip']} until {got['lease_expires_at']}"
    )
    print(got["ip"])


@app.command("checkin")
@handle_errors
def checkin(name: str, vm: str = typer.Argument(..., help="The VM's id, name or IP.")) -> None:
    """Give a VM back."""
    with client() as c:
        c.request("POST", f"/pools/{name}/checkin", json={"id": vm})
    console.print(f"checked in {vm}")


@app.command("extend")
@handle_errors
def extend(name: str, vm: str, seconds: int = typer.Option(..., help="New lease length from now.")) -> None:
    with client() as c:
        got = c.request("POST", f"/pools/{name}/extend", json={"id": vm, "seconds": seconds})
    console.print(f"lease of {vm} now ends {got['lease_expires_at']}")


@app.command("leases")
@handle_errors
def leases() -> None:
    """Your current leases."""
    with client() as c:
        rows = c.request("GET", "/leases")
    table(
        ["VM", "IP", "SINCE", "ENDS"],
        [[x["instance_name"], x["ip"], x["started_at"], x["expires_at"]] for x in rows],
    )


@app.command("history")
@handle_errors
def history(name: str, limit: int = typer.Option(50)) -> None:
    """Who had which VM of the pool, and when."""
    with client() as c:
        rows = c.request("GET", f"/pools/{name}/history", params={"limit": limit})
    table(
        ["VM", "IP", "HOLDER", "FROM", "UNTIL", "HOW"],
        [
            [x["instance_name"], x["ip"], x["holder"], x["started_at"], x["ended_at"], x["end_reason"]]
            for x in rows
        ],
    )
