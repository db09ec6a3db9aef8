"""The dashboard is served at / with deep links falling back to the app, while the API keeps its
own 404s and methods; without a build, / leads to the API docs."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloudlet.api import dashboard, errors


def app_with(directory: Path) -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/api/v1/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    dashboard.install(app, directory)
    return TestClient(app)


def built(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text('<div id="root"></div>')
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log(1)")
    (tmp_path / "favicon.svg").write_text("<svg/>")
    return tmp_path


def test_deep_links_get_the_app_and_assets_are_cached(tmp_path: Path) -> None:
    web = app_with(built(tmp_path))
    for path in ("/", "/vms", "/vms/web1/console"):
        resp = web.get(path)
        assert resp.status_code == 200 and 'id="root"' in resp.text, path
        assert resp.headers["cache-control"] == "no-cache"
    asset = web.get("/assets/index-abc123.js")
    assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
    assert web.get("/api/v1/ping").json() == {"pong": "yes"}
    assert web.get("/favicon.svg").text == "<svg/>"
    assert web.get("/../../etc/passwd").text == '<div id="root"></div>'
    assert web.get("/assets/missing.js").status_code == 404


def test_api_paths_never_fall_back_to_the_app(tmp_path: Path) -> None:
    web = app_with(built(tmp_path))
    for method in ("GET", "POST", "DELETE"):
        for path in ("/api/v1/no-such-route", "/api", "/api/"):
            resp = web.request(method, path)
            assert resp.status_code == 404, (method, path)
            assert resp.headers["content-type"].startswith("application/problem+json")
    wrong = web.delete("/api/v1/ping")
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
    assert web.get("/apiary").status_code == 200  # only /api itself is the API's
    assert web.post("/vms").status_code == 405  # the app's pages are only read


def test_without_a_build_the_root_leads_to_the_api_docs(tmp_path: Path) -> None:
    web = app_with(tmp_path)
    resp = web.get("/", follow_redirects=False)
    assert resp.status_code == 307 and resp.headers["location"] == "/docs"
