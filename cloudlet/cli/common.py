"""What every CLI command shares: the client, error printing, operation progress, tables."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from cloudlet.client import ApiError, Client, OperationFailed

console = Console()
err_console = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")


def client() -> Client:
    return Client()


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn API problems into a clear message on stderr and a non-zero exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ApiError as err:
            err_console.print(
                f"[bold red]Error:[/] {escape(err.title)}: {escape(err.detail)} [dim]({escape(err.code)})[/]"
            )
            raise typer.Exit(2 if err.status < 500 else 1) from None
        except OperationFailed as err:
            kind, detail, code = err.operation["kind"], escape(err.detail), escape(err.code)
            err_console.print(f"[bold red]Failed:[/] {kind}: {detail} [dim]({code})[/]")
            raise typer.Exit(1) from None
        except httpx.HTTPError as err:
            err_console.print(f"[bold red]Error:[/] cannot reach the cloudlet server: {escape(str(err))}")
            raise typer.Exit(1) from None

    return wrapper


@contextlib.contextmanager
def operation_progress(label: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A progress bar (on stderr, gone when done) that follows an operation: yields the function
    to call with each new state of the operation (``Client.wait``'s ``on_progress``). The bar shows
    the operation's percent and its message, e.g. "downloaded 120.0 MiB of 300.0 MiB"; until the
    operation reports a percent above 0 it pulses, as a download of unknown size does."""
    label = escape(label)  # names (a VM's may hold '[') are text, not markup
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)

        def update(op: dict[str, Any]) -> None:
            desc = f"{label}: {escape(op['message'])}" if op.get("message") else label
            percent = op.get("progress") or 0
            progress.update(task, total=100 if percent else None, completed=percent, description=desc)

        yield update


def run_operation(c: Client, op: dict[str, Any], label: str, timeout: float = 1800) -> dict[str, Any]:
    """Show a progress bar while an operation runs; end with one clear line."""
    with operation_progress(label) as update:
        done = c.wait(op, timeout=timeout, on_progress=update)
    console.print(f"[green]✓[/] {escape(label)}: done")
    return done


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Cells are plain text: names and messages are shown as they are, never read as markup."""
    t = Table(*columns, header_style="bold")
    for row in rows:
        t.add_row(*(Text("" if v is None else str(v)) for v in row))
    console.print(t)


def human_bytes(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def print_stats(s: dict[str, Any], *, pids: bool = True) -> None:
    """One stats sample as a one-row table (``pids`` False for a VM, which has none to show)."""
    columns = ["CPU %", "MEM", "MEM %", "NET RX/TX", "BLOCK R/W"]
    row: list[Any] = [
        f"{s['cpu_percent']:.2f}",
        f"{human_bytes(s['memory_bytes'])} / {human_bytes(s['memory_limit_bytes'])}",
        f"{s['memory_percent']:.2f}",
        f"{human_bytes(s['network_rx_bytes'])} / {human_bytes(s['network_tx_bytes'])}",
        f"{human_bytes(s['block_read_bytes'])} / {human_bytes(s['block_write_bytes'])}",
    ]
    if pids:
        columns.append("PIDS")
        row.append(s["pids"])
    else:
        columns.insert(1, "vCPUs")
        row.insert(1, s["online_cpus"])
    table(columns, [row])


def show_fields(obj: dict[str, Any], fields: Sequence[str]) -> None:
    t = Table(show_header=False, box=None)
    for f in fields:
        t.add_row(f"[bold]{f}[/]", Text("" if obj.get(f) is None else str(obj.get(f))))
    console.print(t)


def read_text_arg(path: Path | None) -> str | None:
    """A file's text; '-' is stdin."""
    if path is None:
        return None
    return sys.stdin.read() if str(path) == "-" else path.read_text()


def read_yaml_arg(path: Path | None) -> Any:
    """A YAML or JSON file's document; '-' is stdin. JSON is read as JSON (YAML would refuse the
    tabs JSON files may be indented with)."""
    text = read_text_arg(path)
    if text is None:
        return None
    try:
        return json.loads(text) if text.lstrip()[:1] in ("{", "[") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise typer.BadParameter(f"{path} is neither valid YAML nor JSON: {err}") from None
