"""The web dashboard: the built single-page app (``web/`` → ``cloudlet/dashboard``) served at ``/``.

Any GET of a path the API does not own gets the app's ``index.html``, so the browser's router
handles deep links (``/vms/web1``). The catch-all route cannot match under ``/api``, so unknown
API paths and wrong methods keep their problem+json 404 and 405. Hashed assets are cached for a
year; ``index.html`` is always revalidated, so a new build is picked up on the next load.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
_IMMUTABLE = "public, max-age=31536000, immutable"


class PagePathConvertor(Convertor[str]):
    """Any path but ``/api`` and what lies under it."""

    regex = r"(?!api(?:/|$)).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("page", PagePathConvertor())


class HashedAssets(StaticFiles):
    """Vite names assets by their content hash: a name never changes content, so cache it."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = _IMMUTABLE
        return response


def install(app: FastAPI, directory: Path = DASHBOARD_DIR) -> None:
    """Serve the dashboard at ``/``; call it after the API's routes. Without a build (an install
    without Node.js), ``/`` leads to the API documentation instead."""
    index = directory / "index.html"
    if not index.is_file():

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/docs")

        return

    app.mount("/assets", HashedAssets(directory=directory / "assets"), name="dashboard-assets")
    top_level = {p.name for p in directory.iterdir() if p.is_file()}  # favicon and the like

    @app.api_route("/{path:page}", methods=["GET", "HEAD"], include_in_schema=False)
    def page(path: str) -> FileResponse:
        name = path if path in top_level else "index.html"
        return FileResponse(directory / name, headers={"Cache-Control": "no-cache"})
