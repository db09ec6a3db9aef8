"""The web dashboard: the built single-page app (``web/`` → ``cloudlet/dashboard``) served at ``/``.

Any path the API does not own gets the app's ``index.html``, so the browser's router handles deep
links (``/vms/web1``). Paths under ``/api/`` never fall back: an unknown API path stays a
problem+json 404. Hashed assets are cached for a year; ``index.html`` is always revalidated, so a
new build is picked up on the next load.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
_IMMUTABLE = "public, max-age=31536000, immutable"


class SinglePageApp(StaticFiles):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory)
        self.index = directory / "index.html"

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path == "api" or path.startswith("api/"):
            raise HTTPException(404, f"no API route {scope['path']}")
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404 or scope["method"] not in ("GET", "HEAD"):
                raise
            response = FileResponse(self.index)
        if path.startswith("assets/") and response.status_code == 200:
            response.headers["Cache-Control"] = _IMMUTABLE
        else:
            response.headers["Cache-Control"] = "no-cache"
        return response


def install(app: FastAPI, directory: Path = DASHBOARD_DIR) -> None:
    """Serve the dashboard at ``/``; call it after every API route is added (it matches the rest).
    Without a build (an install without Node), ``/`` leads to the API documentation instead."""
    if (directory / "index.html").is_file():
        app.mount("/", SinglePageApp(directory), name="dashboard")
        return

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/docs")
