"""The CLI with VM names wider than DNS labels: a name with '?', '#', '%', spaces or '[' reaches the
right VM (it is one URL path segment) and is printed as text, never read as Rich markup."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudlet.cli import common
from cloudlet.cli import vms as vms_cli
from tests.unit.conftest import SimCloud

Run = Callable[..., Any]
NAMES = ["my_vm", "Test.VM", "a b?c#d", "100%", "[bold]x", "vm[1]", "[red]"]


@pytest.fixture
def cli(sim: SimCloud, image: str, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setattr(vms_cli, "client", sim.cli_client)
    monkeypatch.setattr(common.console, "width", 200)  # tables wide enough to show whole names
    runner = CliRunner()
    return lambda *args: runner.invoke(vms_cli.app, list(args))


@pytest.mark.parametrize("name", NAMES)
def test_a_wide_name_round_trips_through_the_cli(sim: SimCloud, cli: Run, name: str) -> None:
    made = cli("create", name, "--image", "tiny", "--memory", "64")
    assert made.exit_code == 0, made.output
    assert f"{name} is running at " in made.stdout
    listed = cli("list")
    assert listed.exit_code == 0 and name in listed.stdout, listed.output
    shown = cli("show", name)
    assert shown.exit_code == 0 and name in shown.stdout, shown.output
    stopped = cli("stop", name)
    assert stopped.exit_code == 0, stopped.output
    assert sim.get("/api/v1/instances").json()["items"][0]["state"] == "stopped"
    renamed = cli("rename", name, name + "2")
    assert renamed.exit_code == 0 and f"{name} is now {name}2" in renamed.stdout, renamed.output
    gone = cli("delete", name + "2")
    assert gone.exit_code == 0, gone.output
    assert sim.get("/api/v1/instances").json()["total"] == 0


def test_an_error_naming_a_wide_name_is_printed_as_text(cli: Run) -> None:
    missing = cli("show", "[red]nope")
    assert missing.exit_code == 2 and "instance '[red]nope' not found" in missing.stderr, missing.output
