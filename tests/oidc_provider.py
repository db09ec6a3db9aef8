"""A small OpenID Connect provider for tests: discovery, ``/authorize`` (auto-approves one
configured user), ``/token`` (authorization code + PKCE S256, client_secret_basic or _post) and
``/jwks``, RS256 ID tokens. It runs with uvicorn in a thread on a free 127.0.0.1 port.

It is strict where a real provider is (client id, redirect URI, code once only, PKCE verifier,
client secret) and can misbehave on demand (``misbehave``) so the relying party's checks are tested.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlencode

import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

# Ways the provider can go wrong on purpose, each one a check the relying party must make.
MISBEHAVIOURS = {"wrong_nonce", "foreign_key", "expired", "wrong_audience", "wrong_issuer", "no_id_token"}


def rsa_key(kid: str) -> RSAKey:
    """A fresh 2048-bit RSA signing key (made with ``cryptography``) as a JWK."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return RSAKey.import_key(pem, {"kid": kid, "use": "sig", "alg": "RS256"})


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class ProviderUser:
    sub: str = "user-1234"
    preferred_username: str | None = "Alice"
    name: str | None = "Alice Liddell"
    email: str | None = "alice@example.org"


@dataclass
class Grant:
    """An issued authorization code and what it was issued for."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    sub: str
    used: bool = False


@dataclass
class OidcProvider:
    client_id: str = "cloudlet"
    client_secret: str = "provider-secret-0123456789"
    redirect_uris: set[str] = field(default_factory=set)  # empty: any http(s) redirect URI
    auth_methods: tuple[str, ...] = ("client_secret_basic", "client_secret_post")
    user: ProviderUser = field(default_factory=ProviderUser)
    misbehave: set[str] = field(default_factory=set)
    url: str = ""
    key: RSAKey = field(default_factory=lambda: rsa_key("test-key-1"))
    grants: dict[str, Grant] = field(default_factory=dict)
    # What the token endpoint refused, as OAuth error codes: tests assert on it.
    refusals: list[str] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.first_key = self.key

    def reset(self) -> None:
        self.key = self.first_key
        self.misbehave.clear()
        self.redirect_uris.clear()
        self.refusals.clear()
        self.authorize_requests.clear()
        self.auth_methods = ("client_secret_basic", "client_secret_post")
        self.user = ProviderUser()

    # -- endpoints --------------------------------------------------------------------------------
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/jwks", self.jwks),
            ]
        )

    async def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": list(self.auth_methods),
                "scopes_supported": ["openid", "profile", "email"],
            }
        )

    async def jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def authorize(self, request: Request) -> Response:
        """Auto-approves ``self.user`` for a well-formed request of the known client."""
        q = dict(request.query_params)
        self.authorize_requests.append(q)
        redirect_uri = q.get("redirect_uri", "")
        if q.get("client_id") != self.client_id:
            return JSONResponse({"error": "unauthorized_client"}, 400)
        if not redirect_uri.startswith(("http://", "https://")) or (
            self.redirect_uris and redirect_uri not in self.redirect_uris
        ):
            return JSONResponse({"error": "invalid_request", "error_description": "redirect_uri"}, 400)
        bad = None
        if q.get("response_type") != "code":
            bad = "unsupported_response_type"
        elif "openid" not in q.get("scope", "").split():
            bad = "invalid_scope"
        elif q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            bad = "invalid_request"
        if bad:
            return RedirectResponse(
                f"{redirect_uri}?{urlencode({'error': bad, 'state': q.get('state', '')})}"
            )
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(
            self.client_id, redirect_uri, q["code_challenge"], q.get("nonce"), self.user.sub
        )
        return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': q.get('state', '')})}")

    def _refuse(self, error: str, status: int = 400) -> Response:
        self.refusals.append(error)
        return JSONResponse({"error": error}, status, headers={"Cache-Control": "no-store"})

    def _client_credentials(self, request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic ") and "client_secret_basic" in self.auth_methods:
            raw = base64.b64decode(header[6:]).decode()
            client_id, _, secret = raw.partition(":")
            return unquote_plus(client_id), unquote_plus(secret)
        if "client_secret_post" in self.auth_methods:
            return form.get("client_id"), form.get("client_secret")
        return None, None

    async def token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        client_id, secret = self._client_credentials(request, form)
        if (
            client_id != self.client_id
            or secret is None
            or not secrets.compare_digest(secret, self.client_secret)
        ):
            return self._refuse("invalid_client", 401)
        if form.get("grant_type") != "authorization_code":
            return self._refuse("unsupported_grant_type")
        grant = self.grants.get(form.get("code", ""))
        if grant is None or grant.client_id != client_id:
            return self._refuse("invalid_grant")
        if grant.used:  # RFC 6749 §4.1.2: a code works once
            return self._refuse("invalid_grant")
        grant.used = True
        if form.get("redirect_uri") != grant.redirect_uri:
            return self._refuse("invalid_grant")
        verifier = form.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or not secrets.compare_digest(s256(verifier), grant.code_challenge):
            return self._refuse("invalid_grant")
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": 300,
                **({} if "no_id_token" in self.misbehave else {"id_token": self.id_token(grant)}),
            },
            headers={"Cache-Control": "no-store"},
        )

    def id_token(self, grant: Grant) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "https://elsewhere.example" if "wrong_issuer" in self.misbehave else self.url,
            "aud": "another-client" if "wrong_audience" in self.misbehave else grant.client_id,
            "sub": grant.sub,
            "iat": now - 3600 if "expired" in self.misbehave else now,
            "exp": now - 600 if "expired" in self.misbehave else now + 300,
            "auth_time": now,
        }
        if grant.nonce is not None:
            claims["nonce"] = "not-the-nonce" if "wrong_nonce" in self.misbehave else grant.nonce
        user = self.user
        for name in ("preferred_username", "name", "email"):
            if getattr(user, name) is not None:
                claims[name] = getattr(user, name)
        # A key nobody published, under the published key's id: only the signature can tell.
        key = rsa_key(self.key.kid or "") if "foreign_key" in self.misbehave else self.key
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)


@contextmanager
def running_provider(**options: Any) -> Iterator[OidcProvider]:
    """An ``OidcProvider`` served on a free 127.0.0.1 port for the ``with`` block."""
    provider = OidcProvider(**options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    provider.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        provider.app(), log_level="warning", lifespan="off", ws="none", http="h11", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test OIDC provider did not start")
        time.sleep(0.01)
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
