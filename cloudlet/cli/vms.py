"""`cloudlet vm ...`"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer
from rich.markup import escape

from cloudlet.cli.common import (
    client,
    console,
    err_console,
    handle_errors,
    print_stats,
    read_text_arg,
    read_yaml_arg,
    run_operation,
    show_fields,
    table,
)
from cloudlet.cli.storage import vm_volume_app

app = typer.Typer(help="Virtual machines.", no_args_is_help=True)
snapshot_app = typer.Typer(
    help="Snapshots of a VM: its disk, plus its memory while it runs.", no_args_is_help=True
)
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(vm_volume_app, name="volume")

SHOW_FIELDS = [
    "id",
    "name",
    "state",
    "ip",
    "mac",
    "cpus",
    "memory",
    "disk",
    "image",
    "network",
    "hostname",
    "host",
    "error",
    "created_at",
    "updated_at",
]


def _read_keys(keys: list[str], key_files: list[Path]) -> list[str]:
    out = list(keys)
    for path in key_files:
        out.extend(line.strip() for line in path.read_text().splitlines() if line.strip())
    return out


def _nic(text: str) -> dict[str, str | None]:
    network, _, ip = text.partition("=")
    return {"network": network, "ip": ip or None}


@app.command("create")
@handle_errors
def create(
    name: str,
    image: str = typer.Option(..., "--image", "-i", help="Image name or id."),
    cpus: int = typer.Option(1, help="Virtual CPUs."),
    memory: int = typer.Option(512, help="Memory in MiB."),
    disk: int = typer.Option(1, help="Root disk in GiB."),
    network: str = typer.Option("default", help="Network name or id."),
    hostname: str | None = typer.Option(None, help="Guest hostname (default: the name)."),
    ssh_key: list[str] = typer.Option([], "--ssh-key", help="OpenSSH public key (repeatable)."),
    ssh_key_file: list[Path] = typer.Option([], "--ssh-key-file", help="File of public keys (repeatable)."),
    user_data: Path | None = typer.Option(
        None, help="cloud-init user-data file: #cloud-config, #! script... ('-' reads stdin)."
    ),
    user: list[str] = typer.Option(
        [], "--user", help="Guest user to create, with the SSH keys (repeatable)."
    ),
    sudo: bool = typer.Option(False, help="Give the --user users passwordless sudo."),
    ask_password: bool = typer.Option(False, help="Prompt for a password for the --user users."),
    ssh_password_auth: bool = typer.Option(False, help="Allow SSH logins with passwords."),
    ip: str | None = typer.Option(None, help="Address to take on the network (default: the next free)."),
    static_ip: bool = typer.Option(False, help="Configure the address statically in the guest (no DHCP)."),
    dns: list[str] = typer.Option([], "--dns", help="Nameserver for --static-ip (repeatable)."),
    network_config: Path | None = typer.Option(None, help="Your own cloud-init network config (YAML file)."),
    nic: list[str] = typer.Option(
        [], "--nic", help="NETWORK or NETWORK=IP, one per NIC, the first the primary (repeatable)."
    ),
    wait: bool = typer.Option(True, help="Wait until the VM runs."),
) -> None:
    """Create and start a VM; cloud-init sets it up from the seed cloudlet writes."""
    keys = _read_keys(ssh_key, ssh_key_file)
    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True) if ask_password else None
    spec = {
        "name": name,
        "image": image,
        "cpus": cpus,
        "memory": memory,
        "disk": disk,
        "network": network,
        "hostname": hostname,
        "ssh_keys": keys,
        "user_data": read_text_arg(user_data),
        "users": [{"name": u, "password": password, "ssh_keys": keys, "sudo": sudo} for u in user],
        "ssh_password_auth": ssh_password_auth,
        "ip": ip,
        "static_ip": static_ip,
        "dns": dns,
        "network_config": read_yaml_arg(network_config),
        "nics": [_nic(n) for n in nic],
    }
    with client() as c:
        op = c.create_instance(wait=False, **spec)
        if not wait:
            console.print(f"operation {op['id']} started")
            return
        run_operation(c, op, f"creating {name}")
        vm = c.instance(name)
    console.print(f"{escape(vm['name'])} is {vm['state']} at {vm['ip']}")


@app.command("list")
@handle_errors
def list_vms(
    state: str | None = typer.Option(None, help="Only VMs in this state."),
    name: str | None = typer.Option(None, help="Only VMs whose name contains this."),
) -> None:
    """List VMs."""
    with client() as c:
        rows = c.instances(state=state, name=name, kind="vm")
    table(
        ["NAME", "STATE", "IP", "CPUS", "MEMORY", "DISK", "IMAGE", "NETWORK", "ID"],
        [
            [
                v["name"],
                v["state"],
                v["ip"],
                v["cpus"],
                f"{v['memory']} MiB",
                f"{v['disk']} GiB",
                v["image"],
                v["network"],
                v["id"],
            ]
            for v in rows
        ],
    )


@app.command("show")
@handle_errors
def show(ref: str) -> None:
    """Show one VM."""
    with client() as c:
        show_fields(c.instance(ref), SHOW_FIELDS)


def _action(ref: str, action: str, label: str) -> None:
    with client() as c:
        run_operation(c, c.action(ref, action, wait=False), f"{label} {ref}")


@app.command("start")
@handle_errors
def start(ref: str) -> None:
    """Start a stopped VM."""
    _action(ref, "start", "starting")


@app.command("stop")
@handle_errors
def stop(ref: str, force: bool = typer.Option(False, help="Power off at once, no ACPI shutdown.")) -> None:
    """Stop a VM: ACPI shutdown, forced after the server's timeout."""
    _action(ref, "force-stop" if force else "stop", "stopping")


@app.command("reboot")
@handle_errors
def reboot(ref: str) -> None:
    """Reboot a running VM."""
    _action(ref, "reboot", "rebooting")


@app.command("resize")
@handle_errors
def resize(
    ref: str,
    cpus: int | None = typer.Option(None, help="vCPUs: more also while it runs, fewer when stopped."),
    memory: int | None = typer.Option(
        None, help="MiB: more also while it runs (128 MiB steps), less when stopped."
    ),
    disk: int | None = typer.Option(None, help="GiB; disks only grow, also while the VM runs."),
) -> None:
    """Resize a VM: more vCPUs and memory also while it runs, less when stopped; grow its disk."""
    with client() as c:
        op = c.resize_instance(ref, wait=False, cpus=cpus, memory=memory, disk=disk)
        run_operation(c, op, f"resizing {ref}")


@app.command("eject")
@handle_errors
def eject(ref: str) -> None:
    """Eject the installer ISO from a VM's CD-ROM (also while it runs): it boots from its disk next."""
    with client() as c:
        run_operation(c, c.eject(ref, wait=False), f"ejecting the CD-ROM of {ref}")


@app.command("rename")
@handle_errors
def rename(ref: str, name: str) -> None:
    """Rename a VM; its id, address and guest hostname stay."""
    with client() as c:
        vm = c.rename_instance(ref, name)
    console.print(f"{escape(ref)} is now {escape(vm['name'])}")


@app.command("clone")
@handle_errors
def clone(
    source: str,
    name: str,
    full: bool = typer.Option(False, "--full", help="A standalone copy (default: linked to the image)."),
    snapshot: str | None = typer.Option(None, help="Clone this snapshot; the source may then run."),
    start: bool = typer.Option(True, help="Start the clone once made."),
    hostname: str | None = typer.Option(None, help="Guest hostname (default: the new name)."),
) -> None:
    """Clone a stopped VM, or one of its snapshots, into a new VM with its own address."""
    with client() as c:
        op = c.clone_instance(
            source,
            name,
            wait=False,
            mode="full" if full else "linked",
            snapshot=snapshot,
            start=start,
            hostname=hostname,
        )
        run_operation(c, op, f"cloning {source} into {name}")
        vm = c.instance(name)
    console.print(f"{escape(vm['name'])} is {vm['state']} at {vm['ip']}")


@snapshot_app.command("create")
@handle_errors
def snapshot_create(vm: str, name: str, description: str = typer.Option("", "--description", "-d")) -> None:
    """Snapshot a VM (a running one keeps running; its memory is saved too)."""
    with client() as c:
        run_operation(c, c.create_snapshot(vm, name, description, wait=False), f"snapshotting {vm} as {name}")


@snapshot_app.command("list")
@handle_errors
def snapshot_list(vm: str) -> None:
    with client() as c:
        rows = c.snapshots(vm)
    table(
        ["NAME", "MEMORY", "STATUS", "CREATED", "DESCRIPTION"],
        [
            [x["name"], "yes" if x["with_memory"] else "no", x["status"], x["created_at"], x["description"]]
            for x in rows
        ],
    )


@snapshot_app.command("revert")
@handle_errors
def snapshot_revert(vm: str, name: str) -> None:
    """Return a VM to a snapshot: what was written since is lost."""
    with client() as c:
        run_operation(c, c.revert_snapshot(vm, name, wait=False), f"reverting {vm} to {name}")


@snapshot_app.command("delete")
@handle_errors
def snapshot_delete(vm: str, name: str) -> None:
    with client() as c:
        run_operation(c, c.delete_snapshot(vm, name, wait=False), f"deleting snapshot {name} of {vm}")


@app.command("console")
@handle_errors
def console_(ref: str) -> None:
    """Attach this terminal to a running VM's serial console; Ctrl-] leaves."""
    from cloudlet.cli.console import serial_console

    with client() as c:
        if not serial_console(c, ref):
            err_console.print(f"the console of {escape(ref)} was closed (the VM stopped?)")


@app.command("stats")
@handle_errors
def stats(ref: str) -> None:
    """One sample of a running VM's CPU (percent of all its vCPUs), memory, network and disk IO."""
    with client() as c:
        s = c.instance_stats(ref)
    print_stats(s, pids=False)


@app.command("screenshot")
@handle_errors
def screenshot(
    ref: str,
    output: Path | None = typer.Option(None, "--output", "-o", help="PNG file (default: NAME.png)."),
) -> None:
    """Save what a running VM's screen shows as a PNG file."""
    with client() as c:
        png = c.screenshot(ref)
    path = output or Path(f"{ref}.png")
    path.write_bytes(png)
    console.print(f"{escape(str(path))} ({len(png)} bytes)")


@app.command("type")
@handle_errors
def type_(
    ref: str,
    text: str = typer.Argument(..., help="Printable ASCII; \\n and \\t in a shell's $'...' work."),
    enter: bool = typer.Option(False, "--enter", "-e", help="Press Enter after the text."),
) -> None:
    """Type text on a running VM's keyboard (US layout), as if at its screen."""
    with client() as c:
        keys = c.type_text(ref, text + ("\n" if enter else ""))["keys"]
    console.print(f"typed {keys} keys on {escape(ref)}")


@app.command("delete")
@handle_errors
def delete(ref: str, force: bool = typer.Option(False, help="Delete even if running.")) -> None:
    """Delete a VM with its disk, seed and address."""
    with client() as c:
        run_operation(c, c.delete_instance(ref, force=force, wait=False), f"deleting {ref}")


@app.command("ssh", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def ssh(
    ctx: typer.Context,
    ref: str,
    user: str = typer.Option("root", "--user", "-l", help="Login name."),
    identity: Path | None = typer.Option(None, "--identity", "-i", help="Private key file."),
) -> None:
    """SSH into a VM at its address; extra arguments go to ssh (e.g. a command)."""
    with client() as c:
        vm = c.instance(ref)
    if not vm.get("ip"):
        err_console.print(f"[bold red]Error:[/] {escape(ref)} has no address")
        raise typer.Exit(1)
    exe = shutil.which("ssh")
    if exe is None:
        err_console.print("[bold red]Error:[/] ssh is not installed (Debian: openssh-client)")
        raise typer.Exit(1)
    args = [
        exe,
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]
    if identity:
        args += ["-i", str(identity)]
    args += [f"{user}@{vm['ip']}", *ctx.args]
    os.execv(exe, args)
