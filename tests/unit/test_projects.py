"""Dockerfile projects: files kept inside their project folder whatever path a user sends, limits
that hold, and refused calls that change nothing on disk."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cloudlet.cli import projects as cli
from cloudlet.errors import CloudletError, Conflict, Invalid, NotFound
from cloudlet.services import projects as projects_module
from cloudlet.services.context import RequestContext
from cloudlet.services.projects import MAX_FILE_BYTES, Projects
from tests.unit.conftest import SimCloud

CTX = RequestContext(principal="test", workspace_id="ws-1")
OTHER = RequestContext(principal="test", workspace_id="ws-2")
DOCKERFILE = "FROM alpine:3.20\nCOPY app /app\n"

# Every way a path could try to leave the project, or be ambiguous about where it goes.
ESCAPES = {
    "absolute": "/etc/passwd",
    "parent": "../outside/secret.txt",
    "parent-deep": "../../../../../../etc/passwd",
    "parent-in-the-middle": "app/../../outside/secret.txt",
    "parent-harmless-looking": "app/../Dockerfile",
    "dot-dot": "..",
    "dot": ".",
    "dot-slash": "./Dockerfile",
    "empty": "",
    "double-slash": "app//main.py",
    "trailing-slash": "app/",
    "backslash": "app\\main.py",
    "backslash-parent": "..\\outside\\secret.txt",
    "nul": "Dockerfile\0.txt",
    "name-too-long": "x" * 256,
    "path-too-long": "/".join(["abcdefghi"] * 120),
    "reserved-temp-name": ".cloudlet-tmp-1234",
}


def snapshot(root: Path) -> dict[str, tuple[str, bytes | str]]:
    """Everything under ``root``: files with their bytes, folders, symlinks with their targets."""
    seen: dict[str, tuple[str, bytes | str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for entry in [*dirs, *files]:
            path = Path(dirpath) / entry
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir", "")
            else:
                seen[rel] = ("file", path.read_bytes())
    return seen


def assert_code(err: pytest.ExceptionInfo[CloudletError], status: int, code: str) -> None:
    assert (err.value.status, err.value.code) == (status, code), err.value.detail


@pytest.fixture
def projects(tmp_path: Path) -> Projects:
    return Projects(tmp_path / "projects")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the projects root with a file no project call may read or touch."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("top secret\n")
    return folder


@pytest.fixture
def project(projects: Projects) -> Path:
    """A project 'web' with a Dockerfile and app/main.py; returns its folder."""
    projects.create(CTX, "web", DOCKERFILE)
    projects.write_file(CTX, "web", "app/main.py", b"print('hi')\n")
    return projects.context_dir(CTX, "web")


# -- service: projects --------------------------------------------------------------------------


def test_create_empty_project(projects: Projects) -> None:
    info = projects.create(CTX, "web")
    assert (info.name, info.file_count, info.total_bytes) == ("web", 0, 0)
    assert projects.context_dir(CTX, "web") == projects.root / "ws-1" / "web"
    assert projects.context_dir(CTX, "web").is_dir()
    assert projects.files(CTX, "web") == []


def test_create_with_a_dockerfile(projects: Projects) -> None:
    info = projects.create(CTX, "web", DOCKERFILE)
    assert (info.file_count, info.total_bytes) == (1, len(DOCKERFILE))
    assert projects.read_file(CTX, "web", "Dockerfile") == DOCKERFILE.encode()
    assert (projects.context_dir(CTX, "web") / "Dockerfile").read_text() == DOCKERFILE


def test_duplicate_name_is_409(projects: Projects) -> None:
    projects.create(CTX, "web", DOCKERFILE)
    with pytest.raises(Conflict) as err:
        projects.create(CTX, "web", "FROM scratch\n")
    assert_code(err, 409, "name_taken")
    assert projects.read_file(CTX, "web", "Dockerfile") == DOCKERFILE.encode()


def test_same_name_in_another_workspace_is_fine_and_separate(projects: Projects) -> None:
    projects.create(CTX, "web", DOCKERFILE)
    projects.create(OTHER, "web", "FROM scratch\n")
    assert projects.read_file(OTHER, "web", "Dockerfile") == b"FROM scratch\n"
    assert [p.name for p in projects.list(OTHER)] == ["web"]
    projects.delete(OTHER, "web")
    assert [p.name for p in projects.list(CTX)] == ["web"]
    assert projects.list(OTHER) == []


@pytest.mark.parametrize(
    "name", ["Web", "", "-web", "web-", "a" * 64, "we b", "../web", "a/b", ".web", "web.1"]
)
def test_bad_project_name_is_422_and_makes_nothing(projects: Projects, tmp_path: Path, name: str) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(Invalid) as err:
        projects.create(CTX, name, DOCKERFILE)
    assert_code(err, 422, "invalid_name")
    assert snapshot(tmp_path) == before


def test_concurrent_creates_of_one_name_give_one_winner(projects: Projects) -> None:
    threads, barrier = 12, threading.Barrier(12)
    results: list[str] = []

    def create(i: int) -> None:
        barrier.wait()
        try:
            projects.create(CTX, "race", f"FROM alpine\n# {i}\n")
            results.append("ok")
        except Conflict as err:
            results.append(err.code)

    workers = [threading.Thread(target=create, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(results) == ["name_taken"] * (threads - 1) + ["ok"]
    assert [p.file_count for p in projects.list(CTX)] == [1]


def test_list_is_sorted_with_counts_and_sizes(projects: Projects) -> None:
    assert projects.list(CTX) == []  # no workspace folder yet
    for name in ("zeta", "alpha", "mid"):
        projects.create(CTX, name)
    projects.write_file(CTX, "mid", "Dockerfile", b"FROM scratch\n")
    projects.write_file(CTX, "mid", "a/b/c.txt", b"12345")
    listed = projects.list(CTX)
    assert [p.name for p in listed] == ["alpha", "mid", "zeta"]
    mid = listed[1]
    assert (mid.file_count, mid.total_bytes) == (2, len(b"FROM scratch\n") + 5)
    assert mid.updated_at.tzinfo is not None
    assert projects.get(CTX, "mid") == mid


def test_delete_removes_the_folder_and_frees_the_name(projects: Projects, project: Path) -> None:
    projects.delete(CTX, "web")
    assert not project.exists()
    assert list(project.parent.iterdir()) == []  # no renamed leftovers either
    with pytest.raises(NotFound) as err:
        projects.get(CTX, "web")
    assert_code(err, 404, "project_not_found")
    assert projects.create(CTX, "web").file_count == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.get(CTX, "nope"),
        lambda p: p.files(CTX, "nope"),
        lambda p: p.delete(CTX, "nope"),
        lambda p: p.context_dir(CTX, "nope"),
        lambda p: p.read_file(CTX, "nope", "Dockerfile"),
        lambda p: p.write_file(CTX, "nope", "Dockerfile", b"x"),
        lambda p: p.delete_file(CTX, "nope", "Dockerfile"),
        lambda p: p.get(CTX, "../ws-1"),
        lambda p: p.get(OTHER, "web"),  # another workspace's project
    ],
)
def test_unknown_project_is_404(projects: Projects, project: Path, call: Callable[[Projects], Any]) -> None:
    with pytest.raises(NotFound) as err:
        call(projects)
    assert_code(err, 404, "project_not_found")
    assert not (projects.root / "ws-1" / "nope").exists()


# -- service: files -----------------------------------------------------------------------------


def test_write_read_and_list_files(projects: Projects, project: Path) -> None:
    written = projects.write_file(CTX, "web", "app/static/css/site.css", b"body{}")
    assert (written.path, written.size) == ("app/static/css/site.css", 6)
    assert (project / "app" / "static" / "css" / "site.css").read_bytes() == b"body{}"
    assert projects.read_file(CTX, "web", "app/static/css/site.css") == b"body{}"
    files = projects.files(CTX, "web")
    assert [f.path for f in files] == ["Dockerfile", "app/main.py", "app/static/css/site.css"]
    assert [f.size for f in files] == [len(DOCKERFILE), len(b"print('hi')\n"), 6]


def test_write_replaces_a_file_whole_and_leaves_no_temp_file(projects: Projects, project: Path) -> None:
    projects.write_file(CTX, "web", "Dockerfile", b"FROM scratch\n")
    assert projects.read_file(CTX, "web", "Dockerfile") == b"FROM scratch\n"
    assert sorted(p.name for p in project.iterdir()) == ["Dockerfile", "app"]
    assert projects.get(CTX, "web").file_count == 2


def test_failed_write_keeps_the_old_file(
    projects: Projects, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The content goes to a temp file renamed into place: a failure leaves the old file whole."""

    def broken_replace(*args: Any, **kw: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(projects_module.os, "replace", broken_replace)
    with pytest.raises(OSError):
        projects.write_file(CTX, "web", "Dockerfile", b"FROM half-written")
    monkeypatch.undo()
    assert projects.read_file(CTX, "web", "Dockerfile") == DOCKERFILE.encode()
    assert sorted(p.name for p in project.iterdir()) == ["Dockerfile", "app"]


def test_binary_and_empty_files_round_trip(projects: Projects, project: Path) -> None:
    blob = bytes(range(256)) * 10
    projects.write_file(CTX, "web", "bin/blob", blob)
    projects.write_file(CTX, "web", "empty", b"")
    assert projects.read_file(CTX, "web", "bin/blob") == blob
    assert projects.read_file(CTX, "web", "empty") == b""


def test_unicode_and_odd_file_names_are_just_names(projects: Projects, project: Path) -> None:
    for path in ("café/menü.txt", "with space.txt", "..hidden", "...", "a..b", ".dockerignore", "%2e%2e"):
        projects.write_file(CTX, "web", path, path.encode())
        assert projects.read_file(CTX, "web", path) == path.encode()
        assert (project / path).read_bytes() == path.encode()


def test_delete_file(projects: Projects, project: Path) -> None:
    projects.delete_file(CTX, "web", "app/main.py")
    assert not (project / "app" / "main.py").exists()
    assert [f.path for f in projects.files(CTX, "web")] == ["Dockerfile"]
    with pytest.raises(NotFound) as err:
        projects.delete_file(CTX, "web", "app/main.py")
    assert_code(err, 404, "file_not_found")


@pytest.mark.parametrize("path", ["missing.txt", "nodir/missing.txt", "app/missing.py"])
def test_unknown_file_is_404(projects: Projects, project: Path, path: str) -> None:
    for call in (projects.read_file, projects.delete_file):
        with pytest.raises(NotFound) as err:
            call(CTX, "web", path)
        assert_code(err, 404, "file_not_found")


def test_a_folder_is_not_a_file(projects: Projects, project: Path, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    for call in (
        lambda: projects.read_file(CTX, "web", "app"),
        lambda: projects.delete_file(CTX, "web", "app"),
        lambda: projects.write_file(CTX, "web", "app", b"x"),
        lambda: projects.write_file(CTX, "web", "Dockerfile/inside", b"x"),
        lambda: projects.read_file(CTX, "web", "Dockerfile/inside"),
    ):
        with pytest.raises(Invalid) as err:
            call()
        assert_code(err, 422, "invalid_path")
    assert snapshot(tmp_path) == before


# -- service: path safety -----------------------------------------------------------------------


@pytest.mark.parametrize("path", list(ESCAPES.values()), ids=list(ESCAPES))
def test_escaping_paths_are_refused_and_change_nothing(
    projects: Projects, project: Path, outside: Path, tmp_path: Path, path: str
) -> None:
    before = snapshot(tmp_path)
    for call in (
        lambda: projects.read_file(CTX, "web", path),
        lambda: projects.write_file(CTX, "web", path, b"pwned"),
        lambda: projects.delete_file(CTX, "web", path),
    ):
        with pytest.raises(Invalid) as err:
            call()
        assert_code(err, 422, "invalid_path")
    assert snapshot(tmp_path) == before


def test_symlinked_folder_inside_the_project_is_not_followed(
    projects: Projects, project: Path, outside: Path, tmp_path: Path
) -> None:
    (project / "evil").symlink_to(outside)
    (project / "app" / "deeper").symlink_to(outside)
    before = snapshot(tmp_path)
    for path in ("evil/secret.txt", "evil/new.txt", "app/deeper/secret.txt", "evil/x/y.txt"):
        for call in (
            lambda p: projects.read_file(CTX, "web", p),
            lambda p: projects.write_file(CTX, "web", p, b"pwned"),
            lambda p: projects.delete_file(CTX, "web", p),
        ):
            with pytest.raises(Invalid) as err:
                call(path)
            assert_code(err, 422, "invalid_path")
    assert snapshot(tmp_path) == before
    assert (outside / "secret.txt").read_text() == "top secret\n"
    assert [f.path for f in projects.files(CTX, "web")] == ["Dockerfile", "app/main.py"]


@pytest.mark.parametrize("target", ["outside", "inside", "dangling"])
def test_symlinked_file_is_refused(
    projects: Projects, project: Path, outside: Path, tmp_path: Path, target: str
) -> None:
    """Even a link to a file of the same project: the API never makes links, so it reads none."""
    dest = {
        "outside": outside / "secret.txt",
        "inside": project / "Dockerfile",
        "dangling": outside / "not-yet",
    }[target]
    (project / "link").symlink_to(dest)
    before = snapshot(tmp_path)
    for call in (
        lambda: projects.read_file(CTX, "web", "link"),
        lambda: projects.write_file(CTX, "web", "link", b"pwned"),
        lambda: projects.delete_file(CTX, "web", "link"),
    ):
        with pytest.raises(Invalid) as err:
            call()
        assert_code(err, 422, "invalid_path")
    assert snapshot(tmp_path) == before
    assert not (outside / "not-yet").exists()


def test_project_folder_that_is_a_symlink_is_not_a_project(
    projects: Projects, project: Path, outside: Path, tmp_path: Path
) -> None:
    (project.parent / "linked").symlink_to(outside)
    before = snapshot(tmp_path)
    with pytest.raises(NotFound) as err:
        projects.read_file(CTX, "linked", "secret.txt")
    assert_code(err, 404, "project_not_found")
    with pytest.raises(NotFound):
        projects.write_file(CTX, "linked", "new.txt", b"pwned")
    with pytest.raises(NotFound):
        projects.delete(CTX, "linked")
    assert [p.name for p in projects.list(CTX)] == ["web"]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("call", "swap_at"), [("read", 1), ("write", 2), ("delete", 1)])
def test_a_symlink_swapped_in_after_the_check_is_still_not_followed(
    projects: Projects,
    project: Path,
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
    call: str,
    swap_at: int,
) -> None:
    """Each folder is opened with O_NOFOLLOW, so a race that replaces a checked folder by a symlink
    (between its lstat and its open) still cannot lead outside. ``swap_at`` picks the last lstat of
    'app' (a write inspects the path, then walks it again to write)."""
    real_stat, seen = os.stat, []

    def stat_then_swap(path: Any, *args: Any, **kw: Any) -> os.stat_result:
        result = real_stat(path, *args, **kw)
        if path == "app":
            seen.append(path)
            if len(seen) == swap_at:
                (project / "app").rename(project / "app-moved")
                (project / "app").symlink_to(outside)
        return result

    monkeypatch.setattr(projects_module.os, "stat", stat_then_swap)
    with pytest.raises(Invalid) as err:
        if call == "read":
            projects.read_file(CTX, "web", "app/secret.txt")
        elif call == "write":
            projects.write_file(CTX, "web", "app/secret.txt", b"pwned")
        else:
            projects.delete_file(CTX, "web", "app/secret.txt")
    assert_code(err, 422, "invalid_path")
    assert len(seen) == swap_at
    assert snapshot(outside) == {"secret.txt": ("file", b"top secret\n")}


# -- service: limits ----------------------------------------------------------------------------


def test_file_size_limit(projects: Projects, project: Path, tmp_path: Path) -> None:
    assert projects.write_file(CTX, "web", "big", b"x" * MAX_FILE_BYTES).size == MAX_FILE_BYTES
    before = snapshot(tmp_path)
    with pytest.raises(Invalid) as err:
        projects.write_file(CTX, "web", "new/bigger", b"x" * (MAX_FILE_BYTES + 1))
    assert_code(err, 422, "too_large")
    with pytest.raises(Invalid) as err:
        projects.create(CTX, "huge", "x" * (MAX_FILE_BYTES + 1))
    assert_code(err, 422, "too_large")
    assert snapshot(tmp_path) == before


def test_project_size_limit(
    projects: Projects, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = projects.get(CTX, "web").total_bytes
    monkeypatch.setattr(projects_module, "MAX_PROJECT_BYTES", used + 100)
    projects.write_file(CTX, "web", "a.bin", b"x" * 60)
    before = snapshot(tmp_path)
    with pytest.raises(Invalid) as err:
        projects.write_file(CTX, "web", "sub/b.bin", b"x" * 41)
    assert_code(err, 422, "too_large")
    assert snapshot(tmp_path) == before  # not even the folder "sub"
    projects.write_file(CTX, "web", "b.bin", b"x" * 40)  # exactly at the limit
    projects.write_file(CTX, "web", "a.bin", b"x" * 10)  # replacing counts the new size only
    assert projects.get(CTX, "web").total_bytes == used + 50


def test_real_project_size_limit_is_100_mib(projects: Projects, project: Path) -> None:
    assert projects_module.MAX_PROJECT_BYTES == 100 * 2**20 and projects_module.MAX_FILES == 1000


def test_file_count_limit(
    projects: Projects, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projects_module, "MAX_FILES", 3)
    projects.write_file(CTX, "web", "third", b"3")
    before = snapshot(tmp_path)
    with pytest.raises(Invalid) as err:
        projects.write_file(CTX, "web", "fourth", b"4")
    assert_code(err, 422, "too_large")
    assert snapshot(tmp_path) == before
    projects.write_file(CTX, "web", "third", b"three")  # replacing is no new file
    projects.delete_file(CTX, "web", "third")
    projects.write_file(CTX, "web", "fourth", b"4")


def test_limits_hold_under_concurrent_writes(
    projects: Projects, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projects_module, "MAX_FILES", 6)  # 2 exist: room for 4 more
    barrier, results = threading.Barrier(10), []

    def write(i: int) -> None:
        barrier.wait()
        try:
            projects.write_file(CTX, "web", f"f{i}", b"x")
            results.append("ok")
        except Invalid as err:
            results.append(err.code)

    workers = [threading.Thread(target=write, args=(i,)) for i in range(10)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(results) == ["ok"] * 4 + ["too_large"] * 6
    assert projects.get(CTX, "web").file_count == 6


# -- API ----------------------------------------------------------------------------------------


def assert_problem(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == code


def put(sim: SimCloud, url: str, content: bytes | Iterator[bytes]) -> httpx.Response:
    headers = {**sim.headers, "Content-Type": "application/octet-stream"}
    return sim.client.put(url, content=content, headers=headers)


def api_project(sim: SimCloud) -> str:
    resp = sim.post("/api/v1/projects", json={"name": "web", "dockerfile": DOCKERFILE})
    assert resp.status_code == 201, resp.text
    return "/api/v1/projects/web"


def test_api_round_trip(sim: SimCloud) -> None:
    assert sim.get("/api/v1/projects").json() == []
    resp = sim.post("/api/v1/projects", json={"name": "web", "dockerfile": DOCKERFILE})
    assert resp.status_code == 201
    assert resp.json()["file_count"] == 1
    resp = put(sim, "/api/v1/projects/web/files/app/main.py", b"print('hi')\n")
    assert resp.status_code == 200, resp.text
    assert (resp.json()["path"], resp.json()["size"]) == ("app/main.py", 12)
    assert (sim.data_dir / "projects").is_dir()
    listed = sim.get("/api/v1/projects").json()
    assert [(p["name"], p["file_count"], p["total_bytes"]) for p in listed] == [
        ("web", 2, len(DOCKERFILE) + 12)
    ]
    detail = sim.get("/api/v1/projects/web").json()
    assert [(f["path"], f["size"]) for f in detail["files"]] == [
        ("Dockerfile", len(DOCKERFILE)),
        ("app/main.py", 12),
    ]
    text = sim.get("/api/v1/projects/web/files/Dockerfile")
    assert text.status_code == 200
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == DOCKERFILE
    assert sim.delete("/api/v1/projects/web/files/app/main.py").status_code == 204
    assert_problem(sim.get("/api/v1/projects/web/files/app/main.py"), 404, "file_not_found")
    assert sim.delete("/api/v1/projects/web").status_code == 204
    assert_problem(sim.get("/api/v1/projects/web"), 404, "project_not_found")
    assert sim.get("/api/v1/projects").json() == []


def test_api_binary_file_is_octet_stream(sim: SimCloud) -> None:
    url = api_project(sim)
    blob = b"\x89PNG\r\n\x1a\n\xff\xfe" + bytes(range(256))
    assert put(sim, f"{url}/files/static/logo.png", blob).status_code == 200
    resp = sim.get(f"{url}/files/static/logo.png")
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.content == blob


def test_api_empty_project_and_create_errors(sim: SimCloud) -> None:
    resp = sim.post("/api/v1/projects", json={"name": "empty"})
    assert resp.status_code == 201 and resp.json()["file_count"] == 0
    assert_problem(sim.post("/api/v1/projects", json={"name": "empty"}), 409, "name_taken")
    assert_problem(sim.post("/api/v1/projects", json={"name": "Bad_Name"}), 422, "invalid_name")
    assert_problem(sim.post("/api/v1/projects", json={}), 422, "validation_error")
    lone_surrogate = b'{"name": "web", "dockerfile": "\\ud800"}'  # valid JSON, yet no Unicode text
    headers = {**sim.headers, "Content-Type": "application/json"}
    resp = sim.client.post("/api/v1/projects", content=lone_surrogate, headers=headers)
    assert_problem(resp, 422, "invalid_content")
    assert [p["name"] for p in sim.get("/api/v1/projects").json()] == ["empty"]


def test_api_unknown_project_and_file(sim: SimCloud) -> None:
    for resp in (
        sim.get("/api/v1/projects/nope"),
        sim.delete("/api/v1/projects/nope"),
        sim.get("/api/v1/projects/nope/files/Dockerfile"),
        sim.delete("/api/v1/projects/nope/files/Dockerfile"),
        put(sim, "/api/v1/projects/nope/files/Dockerfile", b"FROM scratch\n"),
    ):
        assert_problem(resp, 404, "project_not_found")
    url = api_project(sim)
    assert_problem(sim.get(f"{url}/files/nope"), 404, "file_not_found")
    assert_problem(sim.delete(f"{url}/files/nope"), 404, "file_not_found")


def test_api_needs_a_token(sim: SimCloud) -> None:
    assert_problem(sim.client.get("/api/v1/projects"), 401, "missing_token")
    assert_problem(sim.client.put("/api/v1/projects/web/files/x", content=b"x"), 401, "missing_token")


ENCODED_ESCAPES = {
    "encoded-dot-dot": "%2e%2e/%2e%2e/%2e%2e/outside/secret.txt",
    "encoded-dot-dot-upper": "%2E%2E/%2E%2E/%2E%2E/outside/secret.txt",
    "encoded-slash-too": "%2e%2e%2f%2e%2e%2f%2e%2e%2foutside%2fsecret.txt",
    "dot-dot-after-a-folder": "app/%2e%2e/%2e%2e/%2e%2e/%2e%2e/outside/secret.txt",
    "mixed": "app/.%2e/Dockerfile",
    "absolute": "%2Fetc%2Fpasswd",
    "backslash": "..%5C..%5Coutside%5Csecret.txt",
    "nul": "Dockerfile%00.txt",
    "single-dot": "%2e/Dockerfile",
    "empty-component": "app/%2Fmain.py",
}


@pytest.mark.parametrize("path", list(ENCODED_ESCAPES.values()), ids=list(ENCODED_ESCAPES))
def test_api_refuses_url_encoded_escapes(sim: SimCloud, path: str) -> None:
    url = api_project(sim)
    outside = sim.data_dir / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret\n")
    before = snapshot(sim.data_dir / "projects"), snapshot(outside)
    for resp in (
        sim.get(f"{url}/files/{path}"),
        put(sim, f"{url}/files/{path}", b"pwned"),
        sim.delete(f"{url}/files/{path}"),
    ):
        assert_problem(resp, 422, "invalid_path")
    assert (snapshot(sim.data_dir / "projects"), snapshot(outside)) == before


def test_api_file_size_limit(sim: SimCloud) -> None:
    url = api_project(sim)
    exact = put(sim, f"{url}/files/exact", b"x" * MAX_FILE_BYTES)
    assert exact.status_code == 200 and exact.json()["size"] == MAX_FILE_BYTES
    before = snapshot(sim.data_dir / "projects")
    assert_problem(put(sim, f"{url}/files/big", b"x" * (MAX_FILE_BYTES + 1)), 422, "too_large")
    assert snapshot(sim.data_dir / "projects") == before


def test_api_stops_reading_a_body_past_the_limit(sim: SimCloud) -> None:
    """A streamed body without Content-Length: the server reads no further than the limit. (The
    TestClient reads whole bodies before the app sees them, so this calls the ASGI app itself.)"""
    url = api_project(sim)
    chunk, chunks_offered, received = b"x" * 2**20, 40, 0
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": chunk, "more_body": received < chunks_offered}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    path = f"{url}/files/big"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {sim.token}".encode()),
            (b"content-type", b"application/octet-stream"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
        "state": {},
    }
    before = snapshot(sim.data_dir / "projects")
    asyncio.run(sim.client.app(scope, receive, send))  # type: ignore[arg-type]
    assert messages[0]["status"] == 422
    assert b'"too_large"' in messages[1]["body"]
    assert received == MAX_FILE_BYTES // len(chunk) + 1  # the limit plus the one chunk that passed it
    assert snapshot(sim.data_dir / "projects") == before


def test_api_lying_content_length_is_refused_up_front(sim: SimCloud) -> None:
    url = api_project(sim)
    headers = {**sim.headers, "Content-Length": str(MAX_FILE_BYTES + 1)}
    req = sim.client.build_request("PUT", f"{url}/files/big", content=b"tiny", headers=headers)
    assert_problem(sim.client.send(req), 422, "too_large")


def test_api_service_is_wired_to_the_data_dir(sim: SimCloud) -> None:
    api_project(sim)
    ctx_dirs = list((sim.data_dir / "projects").iterdir())
    assert len(ctx_dirs) == 1  # the default workspace
    assert (ctx_dirs[0] / "web" / "Dockerfile").read_text() == DOCKERFILE


# -- CLI, run in-process against the sim server -------------------------------------------------


@pytest.fixture
def run_cli(sim: SimCloud, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Run ``cloudlet ct project ...`` with its client talking to ``sim`` in-process."""

    monkeypatch.setattr(cli, "client", sim.cli_client)
    runner = CliRunner()

    def run(*args: str, input: bytes | str | None = None) -> Any:
        return runner.invoke(cli.app, list(args), input=input)

    return run


def test_cli_create_show_cat_put_rm_delete(
    sim: SimCloud, run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    dockerfile = tmp_path / "Dockerfile.local"
    dockerfile.write_text(DOCKERFILE)
    assert run_cli("create", "web", "--dockerfile", str(dockerfile)).exit_code == 0
    cat = run_cli("cat", "web", "Dockerfile")
    assert cat.exit_code == 0 and cat.stdout == DOCKERFILE
    source = tmp_path / "main.py"
    source.write_bytes(b"print('hi')\n")
    put = run_cli("put", "web", "app/main.py", "--from", str(source))
    assert put.exit_code == 0, put.output
    assert run_cli("put", "web", "README", input="from stdin\n").exit_code == 0
    assert sim.cloud.projects.read_file(ctx_of(sim), "web", "README") == b"from stdin\n"
    listed = run_cli("list")
    assert listed.exit_code == 0 and "web" in listed.stdout and "3" in listed.stdout
    shown = run_cli("show", "web")
    assert shown.exit_code == 0
    for path in ("Dockerfile", "app/main.py", "README"):
        assert path in shown.stdout
    assert run_cli("rm", "web", "README").exit_code == 0
    assert "README" not in run_cli("show", "web").stdout
    assert run_cli("delete", "web").exit_code == 0
    assert "web" not in run_cli("list").stdout


def test_cli_errors_are_messages_and_exit_code_2(run_cli: Callable[..., Any]) -> None:
    missing = run_cli("show", "nope")
    assert missing.exit_code == 2
    assert "project_not_found" in missing.stderr
    assert run_cli("create", "web").exit_code == 0
    assert run_cli("create", "web").exit_code == 2
    escape = run_cli("cat", "web", "../../etc/passwd")
    assert escape.exit_code == 2 and "invalid_path" in escape.stderr


def ctx_of(sim: SimCloud) -> RequestContext:
    (workspace,) = (sim.data_dir / "projects").iterdir()
    return RequestContext(principal="test", workspace_id=workspace.name)


def editor(tmp_path: Path, code: str) -> str:
    """An $EDITOR: a Python script that gets the file's path as sys.argv[1]."""
    script = tmp_path / "editor.py"
    script.write_text("import sys\nfrom pathlib import Path\nfile = Path(sys.argv[1])\n" + code)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


def test_cli_edit_uploads_the_changed_file(
    sim: SimCloud, run_cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_cli("create", "web")
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", editor(tmp_path, "file.write_text(file.read_text() + 'FROM alpine\\n')\n"))
    result = run_cli("edit", "web")  # Dockerfile by default, empty while missing
    assert result.exit_code == 0, result.output
    assert sim.cloud.projects.read_file(ctx_of(sim), "web", "Dockerfile") == b"FROM alpine\n"
    assert run_cli("edit", "web", "Dockerfile").exit_code == 0
    assert sim.cloud.projects.read_file(ctx_of(sim), "web", "Dockerfile") == b"FROM alpine\nFROM alpine\n"


def test_cli_edit_without_changes_or_with_a_failing_editor_saves_nothing(
    sim: SimCloud, run_cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_cli("create", "web")
    monkeypatch.setenv("VISUAL", editor(tmp_path, "pass\n"))
    result = run_cli("edit", "web", "app/new.py")
    assert result.exit_code == 0 and "no changes" in result.stdout
    monkeypatch.setenv("VISUAL", editor(tmp_path, "file.write_text('half')\nsys.exit(3)\n"))
    result = run_cli("edit", "web", "app/new.py")
    assert result.exit_code == 1 and "nothing saved" in result.stderr
    assert sim.cloud.projects.files(ctx_of(sim), "web") == []


def test_cli_edit_of_an_unknown_project_fails_before_the_editor(
    run_cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "editor-ran"
    monkeypatch.setenv("VISUAL", editor(tmp_path, f"Path({str(marker)!r}).touch()\n"))
    result = run_cli("edit", "nope")
    assert result.exit_code == 2 and "project_not_found" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("env", "argv"),
    [
        ({}, ["vi"]),
        ({"EDITOR": "nano"}, ["nano"]),
        ({"EDITOR": "code --wait", "VISUAL": ""}, ["code", "--wait"]),
        ({"EDITOR": "nano", "VISUAL": "emacs -nw"}, ["emacs", "-nw"]),
        ({"EDITOR": "'/opt/my editor/bin/ed'"}, ["/opt/my editor/bin/ed"]),
    ],
)
def test_editor_command(env: dict[str, str], argv: list[str]) -> None:
    assert cli.editor_command(env) == argv
