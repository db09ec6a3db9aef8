"""`cloudlet network ...`"""

from __future__ import annotations

import typer

from cloudlet.cli.common import client, handle_errors, run_operation, table

app = typer.Typer(help="Networks with cloudlet-managed addresses.", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_networks() -> None:
    """List networks."""
    with client() as c:
        rows = c.networks()
    table(
        ["NAME", "CIDR", "MODE", "GATEWAY", "USED", "STATUS", "ID"],
        [
            [
                n["name"],
                n["cidr"],
                n["mode"],
                n["gateway"],
                f"{n['addresses_used']}/{n['addresses_total']}",
                n["status"],
                n["id"],
            ]
            for n in rows
        ],
    )


@app.command("create")
@handle_errors
def create(
    name: str,
    cidr: str = typer.Option(..., help="Private IPv4 network, e.g. 10.48.0.0/24."),
    mode: str = typer.Option("nat", help="nat or isolated."),
) -> None:
    """Create a network."""
    with client() as c:
        run_operation(c, c.create_network(name, cidr, mode, wait=False), f"creating network {name}")


@app.command("delete")
@handle_errors
def delete(ref: str) -> None:
    """Delete a network (refused while instances use it)."""
    with client() as c:
        run_operation(c, c.delete_network(ref, wait=False), f"deleting network {ref}")
