"""OpenID Connect end to end on a real server: `cloudlet login --oidc`'s loopback flow against a
provider the test runs, then API calls with the tokens it saved."""

from __future__ import annotations

import httpx
import pytest

from cloudlet.cli.oidc_login import browser_login
from cloudlet.client import Client
from tests.integration.conftest import running_server, traversable_tmp
from tests.oidc_provider import running_provider

pytestmark = pytest.mark.integration


def test_cli_browser_login_through_the_provider(libvirt_conn):  # type: ignore[no-untyped-def]
    with running_provider() as provider:
        env = {
            "CLOUDLET_OIDC_ISSUER": provider.url,
            "CLOUDLET_OIDC_CLIENT_ID": provider.client_id,
            "CLOUDLET_OIDC_CLIENT_SECRET": provider.client_secret,
        }
        with running_server(libvirt_conn, traversable_tmp("server-oidc-"), extra_env=env) as server:
            visited: list[str] = []

            def browser(url: str) -> None:
                """The user's browser: follow the redirects (server -> provider -> server -> CLI)."""
                with httpx.Client(follow_redirects=True, timeout=30) as web:
                    final = web.get(url)
                    visited.extend(str(r.url) for r in final.history)
                    assert final.status_code == 200, final.text

            pair = browser_login(server.url, timeout=60, open_url=browser)
            assert any(u.startswith(provider.url + "/authorize") for u in visited)
            with Client(server.url, pair["access_token"]) as c:
                me = c.request("GET", "/auth/me")
                assert me["username"] == "alice" and not me["is_admin"]  # "Alice", made a valid name
                renewed = c.request("POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
                assert renewed["access_token"] != pair["access_token"]


def test_dashboard_sign_in_through_the_provider(libvirt_conn):  # type: ignore[no-untyped-def]
    """The dashboard's "Sign in with ..." button: provider, callback, the landing page turns the
    handed pair into a cookie session and drops it from the address bar."""
    from playwright.sync_api import expect

    from tests.integration.dashboard import chromium, shot

    with running_provider() as provider:
        env = {
            "CLOUDLET_OIDC_ISSUER": provider.url,
            "CLOUDLET_OIDC_CLIENT_ID": provider.client_id,
            "CLOUDLET_OIDC_CLIENT_SECRET": provider.client_secret,
        }
        with (
            running_server(libvirt_conn, traversable_tmp("server-oidc-web-"), extra_env=env) as server,
            chromium() as (_, browser),
        ):
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/")
            page.get_by_role("link", name="Sign in with").click()
            expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=30_000)
            assert "#" not in page.url and "token" not in page.url
            expect(page.get_by_text("alice")).to_be_visible()
            shot(page, "login-oidc")
            assert not errors, errors
