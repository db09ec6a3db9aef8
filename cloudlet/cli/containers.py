"""`cloudlet ct ...`: containers, their images and Dockerfile projects."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from typing import Any

import typer

from cloudlet.cli import projects
from cloudlet.cli.common import (
    client,
    console,
    err_console,
    handle_errors,
    human_bytes,
    print_stats,
    run_operation,
    show_fields,
    table,
)
from cloudlet.client import Client, OperationFailed

app = typer.Typer(help="Containers on the Docker engine.", no_args_is_help=True)
images_app = typer.Typer(help="Container images on the engine.", no_args_is_help=True)
app.add_typer(images_app, name="image")
app.add_typer(projects.app, name="project")

SHOW_FIELDS = ["id", "name", "state", "ip", "network", "host", "error", "created_at", "updated_at"]
CONTAINER_FIELDS = [
    "short_id", "image", "status", "exit_code", "command", "entrypoint", "env", "ports", "volumes",
    "cpus", "memory", "restart", "started_at", "size_rw", "size_root_fs",
]  # fmt: skip


def parse_port(text: str) -> dict[str, Any]:
    """`8080:80`, `8080:80/udp` or `127.0.0.1:8080:80` (as `docker run -p`)."""
    spec, _, protocol = text.partition("/")
    parts = spec.split(":")
    try:
        if len(parts) == 2:
            host_ip, host, inner = "", parts[0], parts[1]
        elif len(parts) == 3:
            host_ip, host, inner = parts
        else:
            raise ValueError
        return {"host": int(host), "container": int(inner), "protocol": protocol or "tcp", "host_ip": host_ip}
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use HOST:CONTAINER[/udp] or IP:HOST:CONTAINER") from None


def parse_volume(text: str) -> dict[str, Any]:
    """`NAME:/path[:ro]` for a named volume, `/host/path:/path[:ro]` for a host folder."""
    parts = text.split(":")
    read_only = len(parts) == 3 and parts[2] == "ro"
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise typer.BadParameter(f"{text!r}: use NAME:/path[:ro] or /host/path:/path[:ro]")
    source, path = parts[0], parts[1]
    if source.startswith("/"):
        return {"host_path": source, "path": path, "read_only": read_only}
    return {"name": source, "path": path, "read_only": read_only}


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            value = os.environ.get(key, "")  # `-e NAME` passes the caller's value, as docker does
        env[key] = value
    return env


@app.command("run")
@handle_errors
def run(
    name: str,
    image: str,
    command: list[str] = typer.Argument(None, help="Command and arguments (after --)."),
    port: list[str] = typer.Option([], "--port", "-p", help="HOST:CONTAINER[/udp] (repeatable)."),
    env: list[str] = typer.Option([], "--env", "-e", help="NAME=VALUE (repeatable)."),
    volume: list[str] = typer.Option([], "--volume", "-v", help="NAME:/path[:ro] (repeatable)."),
    cpus: float | None = typer.Option(None, help="CPU limit, e.g. 0.5."),
    memory: int | None = typer.Option(None, help="Memory limit in MiB."),
    restart: str = typer.Option("no", help="no | on-failure | always | unless-stopped."),
    network: str = typer.Option("default", help="cloudlet network name or id."),
    entrypoint: str | None = typer.Option(None, help="Replace the image's entrypoint."),
    workdir: str | None = typer.Option(None, "--workdir", "-w"),
    user: str | None = typer.Option(None, "--user", "-u"),
    privileged: bool = typer.Option(False, help="Needs the admin setting allow_privileged."),
    wait: bool = typer.Option(True, help="Wait until it runs."),
) -> None:
    """Run a container from a local image, detached."""
    spec: dict[str, Any] = {
        "kind": "container",
        "name": name,
        "image": image,
        "command": command or None,
        "entrypoint": [entrypoint] if entrypoint else None,
        "ports": [parse_port(p) for p in port],
        "env": parse_env(env),
        "volumes": [parse_volume(v) for v in volume],
        "cpus": cpus,
        "memory": memory,
        "restart": restart,
        "network": network,
        "workdir": workdir,
        "user": user,
        "privileged": privileged,
    }
    with client() as c:
        op = c.create_instance(wait=False, **spec)
        if not wait:
            console.print(f"operation {op['id']} started")
            return
        run_operation(c, op, f"running {name}")
        ct = c.instance(name)
    console.print(f"{ct['name']} is {ct['state']} at {ct['ip']} ({ct['container']['short_id']})")


def _ports(ct: dict[str, Any]) -> str:
    return ", ".join(
        f"{p['host_ip'] + ':' if p['host_ip'] else ''}{p['host']}->{p['container']}/{p['protocol']}"
        for p in ct.get("ports") or []
    )


@app.command("list")
@handle_errors
def list_containers(
    name: str | None = typer.Option(None, help="Only containers whose name contains this."),
    size: bool = typer.Option(False, "--size", "-s", help="Show disk use (slower)."),
) -> None:
    """List containers."""
    with client() as c:
        params: dict[str, Any] = {"kind": "container", "size": size, "limit": 1000}
        if name:
            params["name"] = name
        rows = c.request("GET", "/instances", params=params)["items"]
    columns = ["NAME", "ID", "IMAGE", "STATE", "IP", "PORTS", "CREATED"] + (["SIZE"] if size else [])
    out = []
    for r in rows:
        ct = r["container"] or {}
        line = [
            r["name"],
            ct.get("short_id"),
            ct.get("image"),
            r["state"],
            r["ip"],
            _ports(ct),
            r["created_at"],
        ]
        if size:
            line.append(f"{human_bytes(ct.get('size_rw'))} (virtual {human_bytes(ct.get('size_root_fs'))})")
        out.append(line)
    table(columns, out)


@app.command("show")
@handle_errors
def show(ref: str) -> None:
    """Show one container, with the engine's live status and disk use."""
    with client() as c:
        data = c.request("GET", f"/instances/{ref}", params={"size": True})
    show_fields(data, SHOW_FIELDS)
    show_fields(data.get("container") or {}, CONTAINER_FIELDS)


def _action(ref: str, action: str, label: str, **params: Any) -> None:
    with client() as c:
        op = c.request("POST", f"/instances/{ref}/actions/{action}", params=params)
        run_operation(c, op, f"{label} {ref}")


@app.command("start")
@handle_errors
def start(ref: str) -> None:
    """Start a stopped container."""
    _action(ref, "start", "starting")


@app.command("stop")
@handle_errors
def stop(ref: str) -> None:
    """Stop: SIGTERM, then SIGKILL after the server's stop timeout."""
    _action(ref, "stop", "stopping")


@app.command("restart")
@handle_errors
def restart(ref: str) -> None:
    """Restart a container."""
    _action(ref, "restart", "restarting")


@app.command("kill")
@handle_errors
def kill(ref: str, signal_name: str = typer.Option("SIGKILL", "--signal", "-s")) -> None:
    """Send a signal to the container's main process."""
    _action(ref, "kill", f"sending {signal_name} to", signal=signal_name)


@app.command("pause")
@handle_errors
def pause(ref: str) -> None:
    """Freeze a running container."""
    _action(ref, "pause", "pausing")


@app.command("resume")
@handle_errors
def resume(ref: str) -> None:
    """Thaw a paused container."""
    _action(ref, "resume", "resuming")


@app.command("delete")
@handle_errors
def delete(ref: str, force: bool = typer.Option(False, "--force", "-f", help="Even if running.")) -> None:
    """Delete a container with its volumes and address."""
    with client() as c:
        run_operation(c, c.delete_instance(ref, force=force, wait=False), f"deleting {ref}")


@app.command("logs")
@handle_errors
def logs(
    ref: str,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output."),
    tail: int | None = typer.Option(None, "--tail", "-n", help="Only the last N lines."),
    timestamps: bool = typer.Option(False, "--timestamps", "-t"),
) -> None:
    """Print a container's output."""
    with client() as c:
        for chunk in c.container_logs(ref, follow=follow, tail=tail, timestamps=timestamps):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()


@app.command("stats")
@handle_errors
def stats(ref: str) -> None:
    """One sample of CPU, memory, network and disk IO."""
    with client() as c:
        s = c.container_stats(ref)
    print_stats(s)


@app.command("exec", context_settings={"allow_interspersed_args": False})
@handle_errors
def exec_(
    ref: str,
    command: list[str] = typer.Argument(..., help="Command and arguments."),
    interactive: bool = typer.Option(False, "--interactive", "-i", help="Attach stdin."),
    tty: bool = typer.Option(False, "--tty", "-t", help="With a terminal (use -it for a shell)."),
) -> None:
    """Run a command in a running container; exits with the command's exit code.
    Options go before the container: `cloudlet ct exec -it web -- /bin/sh`."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise typer.BadParameter("give the command to run")
    with client() as c:
        if interactive:
            code = _terminal(c, ref, command)
        else:
            result = c.exec(ref, command, tty=tty)
            sys.stdout.write(result["output"])
            sys.stdout.flush()
            if result["truncated"]:
                err_console.print("[yellow]output truncated at 1 MiB[/]")
            code = result["exit_code"]
    raise typer.Exit(code if code is not None else 1)


def _terminal(c: Client, ref: str, command: list[str]) -> int | None:
    """Bridge this terminal to an exec websocket: raw keys in, bytes out, resizes forwarded."""
    from websockets.sync.client import connect

    cols, rows = shutil.get_terminal_size()
    url, headers = c.ws_url(f"/instances/{ref}/exec/ws", command=command, rows=rows, cols=cols)
    exit_code: list[int | None] = [None]
    with connect(url, additional_headers=headers) as ws:
        stdin_tty = sys.stdin.isatty()
        saved = None
        if stdin_tty:
            import termios
            import tty as ttymod

            saved = termios.tcgetattr(sys.stdin.fileno())
            ttymod.setraw(sys.stdin.fileno())

            def on_resize(*_: object) -> None:
                size = shutil.get_terminal_size()
                ws.send(json.dumps({"type": "resize", "rows": size.lines, "cols": size.columns}))

            signal.signal(signal.SIGWINCH, on_resize)

        def pump_stdin() -> None:
            try:
                while data := os.read(sys.stdin.fileno(), 4096):
                    ws.send(data)
            except Exception:  # the socket closed under us: the command ended
                return

        threading.Thread(target=pump_stdin, daemon=True).start()
        try:
            for frame in ws:
                if isinstance(frame, bytes):
                    os.write(sys.stdout.fileno(), frame)
                else:
                    message = json.loads(frame)
                    if message.get("type") == "exit":
                        exit_code[0] = message.get("code")
        finally:
            if saved is not None:
                import termios

                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
    return exit_code[0]


# -- images ----------------------------------------------------------------------------------------
@images_app.command("list")
@handle_errors
def image_list(
    filter: str | None = typer.Argument(None, help="Only images whose tag or id contains this."),
) -> None:
    """Images on the engine, newest first."""
    with client() as c:
        rows = c.container_images(filter)
    table(
        ["TAGS", "ID", "SIZE", "CREATED", "USED BY"],
        [
            [
                ", ".join(i["tags"]) or "<none>",
                i["short_id"],
                human_bytes(i["size"]),
                i["created"],
                i["in_use"],
            ]
            for i in rows
        ],
    )


@images_app.command("pull")
@handle_errors
def image_pull(ref: str) -> None:
    """Pull an image from its registry, showing progress."""
    with client() as c:
        op = c.pull_image(ref, wait=False)
        _follow_log(c, op)


@images_app.command("search")
@handle_errors
def image_search(term: str, limit: int = typer.Option(25, help="At most this many results.")) -> None:
    """Search the registry (Docker Hub)."""
    with client() as c:
        rows = c.search_images(term, limit)
    table(
        ["NAME", "STARS", "OFFICIAL", "DESCRIPTION"],
        [[r["name"], r["stars"], "yes" if r["official"] else "", r["description"][:70]] for r in rows],
    )


@images_app.command("delete")
@handle_errors
def image_delete(
    ref: str, force: bool = typer.Option(False, "--force", "-f", help="Even if in use.")
) -> None:
    """Delete an image (refused while a container uses it)."""
    with client() as c:
        c.delete_container_image(ref, force=force)
    console.print(f"deleted {ref}")


@images_app.command("prune")
@handle_errors
def image_prune() -> None:
    """Delete dangling images."""
    with client() as c:
        result = c.prune_images()
    console.print(
        f"removed {len(result['removed'])} image(s), {human_bytes(result['space_reclaimed'])} reclaimed"
    )


@images_app.command("build")
@handle_errors
def image_build(
    project: str, tag: list[str] = typer.Option([], "--tag", "-t", help="repo:tag (repeatable).")
) -> None:
    """Build an image from a Dockerfile project, printing the build log live."""
    _build(project, tag)


@projects.app.command("build")
@handle_errors
def project_build(
    name: str, tag: list[str] = typer.Option([], "--tag", "-t", help="repo:tag (repeatable).")
) -> None:
    """Build an image from the project, printing the build log live."""
    _build(name, tag)


def _build(project: str, tags: list[str]) -> None:
    with client() as c:
        op = c.build_project(project, tags, wait=False)
        done = _follow_log(c, op)
    result = done.get("result") or {}
    console.print(f"[green]✓[/] built {result.get('id', '')[:19]} tagged {', '.join(result.get('tags', []))}")


def _follow_log(c: Client, op: dict[str, Any]) -> dict[str, Any]:
    """Print an operation's log as it is written, then wait for its end; a failure prints the
    failing step and exits non-zero."""
    for chunk in c.operation_log(op["id"], follow=True):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    try:
        return c.wait(op)
    except OperationFailed as failed:
        error = failed.operation.get("error") or {}
        if error.get("step"):
            err_console.print(f"[bold red]failed step:[/] {error['step']}")
        raise
