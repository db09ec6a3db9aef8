"""OpenID Connect sign-in, end to end against a local provider (tests/oidc_provider.py): the
browser's redirects are followed by hand, from the cloudlet server to the provider and back."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cloudlet.api.app import create_app
from cloudlet.config import Settings
from cloudlet.db.models import User
from cloudlet.db.session import transaction
from cloudlet.drivers.sim import SimDriver
from cloudlet.drivers.sim_containers import SimContainerDriver
from cloudlet.services import users
from cloudlet.services.cloud import Cloud
from cloudlet.services.oidc import JWKS_MIN_AGE, OidcLogin, username_from
from tests.oidc_provider import OidcProvider, rsa_key, running_provider, s256
from tests.unit.conftest import SimCloud

LOGIN = "/api/v1/auth/oidc/login"
CALLBACK = "http://testserver/api/v1/auth/oidc/callback"


@pytest.fixture(scope="module")
def shared_provider() -> Iterator[OidcProvider]:
    with running_provider() as provider:
        yield provider


@pytest.fixture
def provider(shared_provider: OidcProvider) -> OidcProvider:
    """The module's provider, behaving again, accepting only cloudlet's callback."""
    shared_provider.reset()
    shared_provider.redirect_uris.add(CALLBACK)
    return shared_provider


@dataclass
class Server:
    client: TestClient
    cloud: Cloud

    def users(self) -> int:
        with self.cloud.db.reads() as s:
            return s.scalar(select(func.count()).select_from(User)) or 0

    def user(self, username: str) -> User:
        with self.cloud.db.reads() as s:
            return users.get_user(s, username)


@contextmanager
def oidc_server(data_dir: Path, provider: OidcProvider, **overrides: Any) -> Iterator[Server]:
    """A whole server on the simulated drivers, signing in through ``provider``."""
    options: dict[str, Any] = {
        "oidc_issuer": provider.url,
        "oidc_client_id": provider.client_id,
        "oidc_client_secret": provider.client_secret,
        **overrides,
    }
    settings = Settings(
        data_dir=data_dir, vm_driver="sim", container_driver="sim", resync_interval=3600, **options
    )
    driver = SimDriver(memory_mb=8192)
    cloud = Cloud.build(settings, backend=(driver, driver), container_driver=SimContainerDriver())
    app = create_app(settings, cloud=cloud, on_admin_token=lambda _token: None)
    with TestClient(app) as client:
        yield Server(client, cloud)


@pytest.fixture
def server(tmp_path: Path, provider: OidcProvider) -> Iterator[Server]:
    with oidc_server(tmp_path, provider) as server:
        yield server


def to_provider(server: Server, **params: Any) -> str:
    """Start a sign-in; the URL of the provider's authorization page it redirects to."""
    resp = server.client.get(LOGIN, params=params, follow_redirects=False)
    assert resp.status_code == 302, resp.text
    return resp.headers["location"]


def approve(authorize_url: str) -> str:
    """The browser at the provider: it approves and sends back to the callback URL it returns."""
    resp = httpx.get(authorize_url, follow_redirects=False)
    assert resp.status_code in (302, 307), resp.text
    location = resp.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return str(location)


def callback(server: Server, url: str) -> httpx.Response:
    return server.client.get(url, follow_redirects=False)


def sign_in(server: Server, **params: Any) -> httpx.Response:
    return callback(server, approve(to_provider(server, **params)))


def with_param(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


def me(server: Server, access_token: str) -> httpx.Response:
    return server.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {access_token}"})


def assert_refused(resp: httpx.Response, status: int = 401, code: str = "oidc_failed") -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == code
    assert "access_token" not in resp.text


# -- the happy path -------------------------------------------------------------------------------
def test_sign_in_end_to_end(server: Server, provider: OidcProvider) -> None:
    before = server.users()
    authorize = to_provider(server)
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(provider.url + "/authorize?")
    assert query["client_id"] == [provider.client_id]
    assert query["redirect_uri"] == [CALLBACK]
    assert query["code_challenge_method"] == ["S256"]
    assert query["scope"] == ["openid profile email"]
    assert query["state"][0] and query["nonce"][0] and query["state"] != query["nonce"]

    resp = callback(server, approve(authorize))
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    pair = resp.json()
    assert pair.keys() == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert pair["token_type"] == "bearer"
    assert provider.refusals == []  # the provider checked secret, code, redirect URI and verifier

    who = me(server, pair["access_token"])
    assert who.status_code == 200, who.text
    assert who.json()["username"] == "alice"
    assert who.json()["display_name"] == "Alice Liddell"
    assert server.users() == before + 1
    user = server.user("alice")
    assert (user.oidc_issuer, user.oidc_subject) == (provider.url, provider.user.sub)
    assert user.password_hash is None  # no password: this account signs in only through the provider

    # The refresh token is an ordinary cloudlet one.
    refreshed = server.client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text


def test_second_sign_in_is_the_same_user(server: Server, provider: OidcProvider) -> None:
    first = sign_in(server).json()
    count = server.users()
    provider.user.preferred_username = "renamed"  # the provider's username changed; the subject did not
    second = sign_in(server).json()
    assert server.users() == count
    assert first["access_token"] != second["access_token"]
    assert me(server, first["access_token"]).json()["id"] == me(server, second["access_token"]).json()["id"]
    assert me(server, second["access_token"]).json()["username"] == "alice"


def test_a_local_account_of_the_same_name_is_not_taken_over(server: Server) -> None:
    with transaction(server.cloud.db.sessions) as s:
        local = users.create_user(s, "alice", "a-long-password-1")
    pair = sign_in(server).json()
    mine = me(server, pair["access_token"]).json()
    assert mine["username"] == "alice-2"
    assert mine["id"] != local.id


def test_client_secret_post_when_the_provider_wants_it(server: Server, provider: OidcProvider) -> None:
    provider.auth_methods = ("client_secret_post",)
    resp = sign_in(server)
    assert resp.status_code == 200, resp.text
    assert provider.refusals == []


def test_public_url_makes_the_redirect_uri(tmp_path: Path, provider: OidcProvider) -> None:
    with oidc_server(tmp_path, provider, public_url="https://cloud.example.com/") as server:
        query = parse_qs(urlsplit(to_provider(server)).query)
    assert query["redirect_uri"] == ["https://cloud.example.com/api/v1/auth/oidc/callback"]


# -- where the tokens go --------------------------------------------------------------------------
def test_cli_login_gets_the_tokens_on_its_loopback_port(server: Server) -> None:
    cli_state = secrets.token_urlsafe(24)
    resp = sign_in(server, cli_port=48123, cli_state=cli_state)
    assert resp.status_code == 302
    target = urlsplit(resp.headers["location"])
    assert (target.scheme, target.netloc, target.path) == ("http", "127.0.0.1:48123", "/callback")
    got = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert got["state"] == cli_state
    assert me(server, got["access_token"]).json()["username"] == "alice"
    assert got["refresh_token"].startswith("clr_")


def test_dashboard_login_gets_the_tokens_in_the_fragment(server: Server) -> None:
    resp = sign_in(server, redirect="/ui/instances?x=1")
    assert resp.status_code == 302
    path, _, fragment = resp.headers["location"].partition("#")
    assert path == "/ui/instances?x=1"
    assert me(server, parse_qs(fragment)["access_token"][0]).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"redirect": "//evil.example/x"},
        {"redirect": "https://evil.example/"},
        {"redirect": "/\\evil.example"},
        {"redirect": "/ok", "cli_port": 50000},
        {"cli_port": 80},
        {"cli_state": "only-with-a-port-xxxx"},
    ],
)
def test_login_refuses_foreign_redirects(server: Server, params: dict[str, Any]) -> None:
    resp = server.client.get(LOGIN, params=params, follow_redirects=False)
    assert resp.status_code == 422, resp.text


# -- refusals: no tokens, no account --------------------------------------------------------------
def test_tampered_state_is_refused(server: Server) -> None:
    before = server.users()
    url = approve(to_provider(server))
    assert_refused(callback(server, with_param(url, state=secrets.token_urlsafe(32))))
    assert server.users() == before


def test_unknown_state_is_refused(server: Server) -> None:
    before = server.users()
    assert_refused(callback(server, f"{CALLBACK}?{urlencode({'code': 'abc', 'state': 'never-issued'})}"))
    assert_refused(callback(server, CALLBACK))  # no code, no state
    assert server.users() == before


def test_a_callback_works_once(server: Server) -> None:
    url = approve(to_provider(server))
    assert callback(server, url).status_code == 200
    assert_refused(callback(server, url))


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("wrong_nonce", "'nonce'"),
        ("foreign_key", "signature"),
        ("expired", "expired"),
        ("wrong_audience", "'aud'"),
        ("wrong_issuer", "'iss'"),
    ],
)
def test_bad_id_token_is_refused(server: Server, provider: OidcProvider, fault: str, reason: str) -> None:
    before = server.users()
    provider.misbehave.add(fault)
    resp = sign_in(server)
    assert_refused(resp)
    assert reason in resp.json()["detail"]
    assert server.users() == before
    provider.misbehave.clear()
    assert sign_in(server).status_code == 200  # the same server still signs in a good token


def test_no_id_token_is_refused(server: Server, provider: OidcProvider) -> None:
    provider.misbehave.add("no_id_token")
    assert_refused(sign_in(server))


def test_provider_error_is_refused(server: Server) -> None:
    to_provider(server)
    assert_refused(callback(server, f"{CALLBACK}?error=access_denied&state=whatever"))


def test_wrong_client_secret_is_refused(tmp_path: Path, provider: OidcProvider) -> None:
    with oidc_server(tmp_path, provider, oidc_client_secret="not-the-secret-at-all") as server:
        before = server.users()
        assert_refused(sign_in(server))
        assert server.users() == before
    assert provider.refusals == ["invalid_client"]


def test_disabled_user_is_refused(server: Server) -> None:
    sign_in(server)
    with transaction(server.cloud.db.sessions) as s:
        users.set_disabled(users.get_user(s, "alice"), True)
    assert_refused(sign_in(server), 403, "account_disabled")


def test_without_auto_create_unknown_people_are_refused(tmp_path: Path, provider: OidcProvider) -> None:
    with oidc_server(tmp_path, provider, oidc_auto_create=False) as server:
        before = server.users()
        assert_refused(sign_in(server), 403, "oidc_no_account")
        assert server.users() == before


# -- configuration ---------------------------------------------------------------------------------
def test_config_names_the_provider(server: Server, provider: OidcProvider) -> None:
    assert server.client.get("/api/v1/auth/oidc/config").json() == {"enabled": True, "issuer": provider.url}


def test_not_configured_is_a_clear_error(sim: SimCloud) -> None:
    assert sim.client.get("/api/v1/auth/oidc/config").json() == {"enabled": False, "issuer": None}
    for path in (LOGIN, "/api/v1/auth/oidc/callback?code=a&state=b", "/api/v1/auth/oidc/callback?error=x"):
        resp = sim.client.get(path, follow_redirects=False)
        assert_refused(resp, 404, "oidc_not_configured")
        assert "oidc_issuer" in resp.json()["detail"]


def test_unreachable_provider_is_a_provider_error(tmp_path: Path) -> None:
    dead = OidcProvider(url="http://127.0.0.1:9")  # the discard port: nothing answers
    with oidc_server(tmp_path, dead) as server:
        assert_refused(server.client.get(LOGIN, follow_redirects=False), 502, "oidc_provider_error")


def test_rotated_provider_keys_are_fetched_again(server: Server, provider: OidcProvider) -> None:
    later = [0.0]
    app: Any = server.client.app
    app.state.oidc = OidcLogin(
        server.cloud.settings, server.cloud.db.sessions, clock=lambda: time.time() + later[0]
    )
    assert sign_in(server).status_code == 200
    provider.key = rsa_key("test-key-2")
    # Right after a fetch an unknown key is refused: forged tokens cannot make cloudlet hammer the
    # provider's JWKS endpoint...
    assert_refused(sign_in(server))
    later[0] = JWKS_MIN_AGE + 1
    assert sign_in(server).status_code == 200  # ...but a real rotation is picked up soon after


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        ("Alice", "alice"),
        ("alice@example.org", "alice"),
        ("Jean Dupont", "jean-dupont"),
        ("--.x", "x"),
        ("Ünïcødé", "n-c-d"),
        ("a" * 100, "a" * 63),
        ("", "oidc-"),
        (None, "oidc-"),
    ],
)
def test_usernames_made_from_claims_are_valid(claim: str | None, expected: str) -> None:
    name = username_from(claim, "subject-1")
    assert users.USERNAME.fullmatch(name)
    assert name.startswith(expected) if expected == "oidc-" else name == expected


# -- the provider itself is strict, like a real one ---------------------------------------------
def provider_code(provider: OidcProvider, verifier: str) -> str:
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": CALLBACK,
        "scope": "openid",
        "state": "s",
        "nonce": "n",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    resp = httpx.get(f"{provider.url}/authorize", params=params)
    return parse_qs(urlsplit(resp.headers["location"]).query)["code"][0]


def redeem(provider: OidcProvider, code: str, verifier: str, secret: str | None = None) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "code_verifier": verifier,
    }
    return httpx.post(
        f"{provider.url}/token", data=form, auth=(provider.client_id, secret or provider.client_secret)
    )


def test_provider_refuses_a_wrong_verifier_a_reused_code_and_a_wrong_secret(provider: OidcProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    assert redeem(provider, provider_code(provider, verifier), secrets.token_urlsafe(48)).status_code == 400
    assert redeem(provider, provider_code(provider, verifier), verifier, "wrong-secret").status_code == 401
    code = provider_code(provider, verifier)
    assert redeem(provider, code, verifier).status_code == 200
    assert redeem(provider, code, verifier).status_code == 400
    assert provider.refusals == ["invalid_grant", "invalid_client", "invalid_grant"]
