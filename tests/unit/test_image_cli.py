"""`cloudlet image import --url / set / publish` and `cloudlet vm eject`, run in-process against the
sim server (the client talks to it through a TestClient)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudlet.cli import images as images_cli
from cloudlet.cli import vms as vms_cli
from tests.unit.conftest import SimCloud, sim_cloud
from tests.unit.test_image_import import LOOPBACK, FileServer, files  # noqa: F401 - the fixture
from tests.unit.test_image_media import make_iso
from tests.unit.test_images import stored_files

Run = Callable[..., Any]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimCloud]:
    """The sim server, allowed to download from loopback (where the test's file server is)."""
    with sim_cloud(tmp_path, outbound_allow=LOOPBACK) as cloud:
        yield cloud


@pytest.fixture
def cli(sim: SimCloud, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``cli("image", ...)`` or ``cli("vm", ...)``."""

    monkeypatch.setattr(images_cli, "client", sim.cli_client)
    monkeypatch.setattr(vms_cli, "client", sim.cli_client)
    runner = CliRunner()
    apps = {"image": images_cli.app, "vm": vms_cli.app}

    def run(group: str, *args: str) -> Any:
        return runner.invoke(apps[group], list(args))

    return run


def test_import_from_url_with_sha256(sim: SimCloud, cli: Run, files: FileServer, qcow2_image: Path) -> None:  # noqa: F811
    (files.root / "disk.qcow2").write_bytes(qcow2_image.read_bytes())
    sha = hashlib.sha256(qcow2_image.read_bytes()).hexdigest()
    out = cli("image", "import", "net", "--url", files.url("disk.qcow2"), "--sha256", sha, "--os", "debian12")
    assert out.exit_code == 0, out.output
    assert f"net: qcow2, sha256 {sha}" in out.stdout
    image = sim.get("/api/v1/images/net").json()
    assert (image["sha256"], image["os"]) == (sha, "debian12")
    bad = cli("image", "import", "net2", "--url", files.url("disk.qcow2"), "--sha256", "f" * 64)
    assert bad.exit_code == 1 and "checksum_mismatch" in bad.stderr
    assert sim.get("/api/v1/images/net2").status_code == 404


@pytest.mark.parametrize(
    "args",
    [
        ("x",),  # neither PATH nor --url
        ("x", "some.qcow2", "--url", "http://127.0.0.1/x"),  # both
        ("x", "some.qcow2", "--sha256", "0" * 64),  # a checksum for an upload
    ],
)
def test_import_needs_one_source(cli: Run, args: tuple[str, ...]) -> None:
    out = cli("image", "import", *args)
    assert out.exit_code == 2


def test_set_shows_and_clears_properties(sim: SimCloud, cli: Run, image: str) -> None:
    out = cli("image", "set", image, "--os", "tiny", "--min-disk", "2", "--min-memory", "128")
    assert out.exit_code == 0, out.output
    shown = sim.get(f"/api/v1/images/{image}").json()
    assert (shown["os"], shown["min_disk"], shown["min_memory"]) == ("tiny", 2, 128)
    assert cli("image", "set", image, "--min-disk", "0", "--os", "").exit_code == 0
    shown = sim.get(f"/api/v1/images/{image}").json()
    assert (shown["os"], shown["min_disk"], shown["min_memory"]) == (None, None, 128)
    assert cli("image", "set", image).exit_code == 2  # nothing to set
    listing = cli("image", "show", image)
    assert "min_memory" in listing.stdout and "128" in listing.stdout


def test_publish_and_eject(sim: SimCloud, cli: Run, create_vm: Callable[..., Any], tmp_path: Path) -> None:
    create_vm("web1")
    refused = cli("image", "publish", "web1", "golden")
    assert refused.exit_code == 2 and "instance_running" in refused.stderr
    sim.post("/api/v1/instances/web1/actions/stop", params={"wait": 10})
    assert cli("image", "publish", "web1", "golden").exit_code == 0
    assert sim.get("/api/v1/images/golden").json()["source"] == "instance:web1"

    iso = make_iso(tmp_path / "inst.iso")
    assert cli("image", "import", "inst", str(iso), "--server-path").exit_code == 0
    create_vm("inst1", image="inst")
    assert cli("vm", "eject", "inst1").exit_code == 0
    again = cli("vm", "eject", "inst1")
    assert again.exit_code == 2 and "no_media" in again.stderr
    assert len(stored_files(sim)) == 3  # tiny, golden, inst
