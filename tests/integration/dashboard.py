"""Driving the web dashboard in Debian's headless Chromium with Playwright (no browser download:
the Chromium of the Debian package is launched by path).

`dashboard_page(server)` signs a fresh user in through the login form and yields the page; when
the test ends it fails on any error the browser console printed. `shot(page, name)` saves a
screenshot under `build/screenshots/` (or `$CLOUDLET_SCREENSHOT_DIR`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

from tests.helpers import require_real
from tests.integration.conftest import Server

CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(
    os.environ.get("CLOUDLET_SCREENSHOT_DIR", Path(__file__).parents[2] / "build" / "screenshots")
)
PASSWORD = "dashboard-Pass-1"


def chromium_path() -> str:
    for path in CHROMIUM_PATHS:
        if Path(path).exists():
            return path
    found = shutil.which("chromium")
    if found is None:
        require_real("Debian's chromium (scripts/setup-host installs it)")
    return str(found)


@contextlib.contextmanager
def chromium() -> Iterator[tuple[Playwright, Browser]]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        try:
            yield pw, browser
        finally:
            browser.close()


def make_user(server: Server, *, admin: bool = True) -> str:
    """A user with a password, made through the API with the admin token."""
    username = f"web{secrets.token_hex(3)}"
    with server.client() as c:
        c.request("POST", "/users", json={"username": username, "password": PASSWORD, "is_admin": admin})
    return username


def sign_in(page: Page, server: Server, username: str) -> None:
    page.goto(server.url + "/")
    expect(page.get_by_role("form", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=15_000)


# What a test provokes on purpose: Chromium logs every 4xx/5xx answer as a console error.
REFUSALS = re.compile(r"Failed to load resource: the server responded with a status of (409|502)")


@contextlib.contextmanager
def dashboard_page(
    browser: Browser,
    server: Server,
    *,
    width: int = 1280,
    height: int = 860,
    expected: re.Pattern[str] | None = None,
) -> Iterator[Page]:
    """A signed-in page; on exit, any console error (but those matching ``expected``: answers the
    test provokes) or uncaught exception fails the test. Confirmation dialogs are accepted."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        # Chromium drops requests in flight when the host's interfaces change, which other tests
        # do by making bridges; the app reads again, and that is no error of the app's.
        if msg.type != "error" or "ERR_NETWORK_CHANGED" in msg.text:
            return
        if expected is None or not expected.search(msg.text):
            errors.append(f"console: {msg.text} ({msg.location.get('url', '')})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("dialog", lambda d: d.accept())  # the confirm() before deletes, reverts, check-ins
    try:
        sign_in(page, server, make_user(server))
        yield page
        assert not errors, "the browser reported errors:\n" + "\n".join(errors)
    finally:
        context.close()


def nav(page: Page, name: str) -> None:
    """Follow a link of the main navigation (on a phone width, through the menu)."""
    links = page.get_by_role("navigation", name="Main")
    if not links.is_visible():
        page.get_by_role("button", name="Menu").click()
    links.get_by_role("link", name=name, exact=True).click()


def shot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
