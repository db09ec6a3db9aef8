"""OpenID Connect sign-in: the authorization code flow with PKCE (S256) against one provider,
given by its issuer URL, a client id and a client secret.

``begin`` reads the provider's discovery document, makes a state, a nonce and a PKCE verifier,
keeps them server side and returns the provider's authorization URL. The provider sends the browser
back to the callback with ``code`` and ``state``; ``sign_in`` consumes the state (once: an unknown,
expired or replayed state is refused), trades the code at the token endpoint with the client secret
and the verifier, validates the ID token (signature against the provider's JWKS, ``iss``, ``aud``,
``exp``, ``nonce``), maps (issuer, subject) to a local user and starts a cloudlet sign-in.

Pending logins are ``meta`` rows keyed by a hash of their state and expire after ``PENDING_TTL``,
so any replica can answer the callback and a database read does not reveal a usable state. The
discovery document and the JWKS are cached in memory per process for ``DISCOVERY_TTL``; the JWKS is
fetched again when an ID token's signature does not check (the provider may have rotated its keys),
at most every ``JWKS_MIN_AGE`` seconds. Network calls never run inside a database transaction.

Failures to prove who the caller is are 401 ``oidc_failed``; a provider that does not answer, or
answers nonsense, is 502 ``oidc_provider_error``; no configuration is 404 ``oidc_not_configured``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudlet.config import Settings
from cloudlet.db.models import Meta, User
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.errors import CloudletError, Conflict, Forbidden, NotFound, Unauthorized
from cloudlet.services import logins
from cloudlet.services.users import USERNAME

DISCOVERY_TTL = 3600.0  # seconds the discovery document and the JWKS are trusted
JWKS_MIN_AGE = 30.0  # seconds before a JWKS may be fetched again for an unknown key
PENDING_TTL = 600.0  # seconds between the redirect to the provider and the callback
MAX_PENDING = 10_000  # unauthenticated callers can start logins: bound the rows they can make
LEEWAY = 60  # seconds of clock skew allowed on the ID token's times
HTTP_TIMEOUT = 10.0
STATE_PREFIX = "oidc_state:"
# Only asymmetric signatures: an ID token signed with "none" or a shared secret is refused.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


class OidcNotConfigured(NotFound):
    code, title = "oidc_not_configured", "OpenID Connect is not configured"


class OidcBusy(CloudletError):
    status, code, title = 429, "oidc_busy", "Too many sign-ins in progress"


class OidcProviderError(CloudletError):
    """The provider did not answer, or answered with something unusable: not the caller's fault."""

    status, code, title = 502, "oidc_provider_error", "OpenID Connect provider error"


def failed(detail: str) -> Unauthorized:
    """The one error of a sign-in that did not prove who the caller is."""
    return Unauthorized(f"OpenID Connect sign-in failed: {detail}", code="oidc_failed")


@dataclass(frozen=True)
class Provider:
    """The parts of a discovery document a sign-in uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    token_auth: str  # "client_secret_basic" or "client_secret_post"
    algorithms: tuple[str, ...]


@dataclass(frozen=True)
class Pending:
    """A login between the redirect to the provider and the callback."""

    nonce: str
    code_verifier: str
    redirect_uri: str
    expires_at: float  # unix time
    return_to: str | None = None  # a local path of the dashboard to send the tokens to
    cli_port: int | None = None  # a loopback port of `cloudlet login --oidc` to send the tokens to
    cli_state: str | None = None  # echoed to the CLI, so it knows the tokens answer its own login


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in (the validated ID token's claims that matter)."""

    issuer: str
    subject: str
    username_hint: str | None
    display_name: str | None


class _NoAuth(httpx.Auth):
    """client_secret_post: the credentials are in the form, not in a header."""


def _state_key(state: str) -> str:
    return STATE_PREFIX + hashlib.sha256(state.encode()).hexdigest()[:48]


def username_from(hint: str | None, subject: str) -> str:
    """A valid username (``[a-z0-9][a-z0-9._-]``, at most 63 characters) made from a claim: an
    e-mail's local part, lowercased, other characters turned into '-'; the subject if nothing is left."""
    raw = (hint or "").strip().lower().split("@", 1)[0]
    name = re.sub(r"[^a-z0-9._-]+", "-", raw).lstrip("._-")[:63].rstrip("._-")
    if not name:
        name = "oidc-" + hashlib.sha256(subject.encode()).hexdigest()[:12]
    return name


class OidcLogin:
    """Sign-in through the configured OpenID Connect provider; one per server process."""

    def __init__(
        self,
        settings: Settings,
        sessions: SessionFactory,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.transport = transport
        self.clock = clock
        self._lock = threading.Lock()
        self._provider: tuple[float, Provider] | None = None
        self._jwks: tuple[float, KeySet] | None = None  # (fetched at, keys)

    @property
    def enabled(self) -> bool:
        s = self.settings
        return bool(s.oidc_issuer and s.oidc_client_id and s.oidc_client_secret)

    def require_configured(self) -> tuple[str, str, str]:
        """The issuer, client id and client secret; a 404 ``oidc_not_configured`` when unset."""
        s = self.settings
        if not (s.oidc_issuer and s.oidc_client_id and s.oidc_client_secret):
            raise OidcNotConfigured(
                "OpenID Connect sign-in is not configured on this server "
                "(set oidc_issuer, oidc_client_id and oidc_client_secret)"
            )
        return s.oidc_issuer, s.oidc_client_id, s.oidc_client_secret

    def _http(self) -> httpx.Client:
        # A client per call: a sign-in makes a handful of requests, and nothing is left open.
        return httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False, transport=self.transport)

    # -- the provider -----------------------------------------------------------------------------
    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            with self._http() as http:
                resp = http.get(url, headers={"Accept": "application/json"})
            resp.raise_for_status()
            data = resp.json()
        except (httpx.HTTPError, ValueError) as err:
            raise OidcProviderError(f"could not read the provider's {what} ({type(err).__name__})") from None
        if not isinstance(data, dict):
            raise OidcProviderError(f"the provider's {what} is not a JSON object")
        return data

    def provider(self) -> Provider:
        """The provider's endpoints from ``<issuer>/.well-known/openid-configuration`` (cached)."""
        issuer, _, _ = self.require_configured()
        now = self.clock()
        with self._lock:
            if self._provider is not None and self._provider[0] > now:
                return self._provider[1]
        doc = self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery document")
        # OpenID Connect Discovery 1.0 §4.3: the document must name the issuer it was fetched for.
        if not isinstance(doc.get("issuer"), str) or doc["issuer"].rstrip("/") != issuer.rstrip("/"):
            raise OidcProviderError("the discovery document names another issuer")
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(name)
            if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                raise OidcProviderError(f"the discovery document has no valid {name}")
            endpoints[name] = value
        methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        auth = "client_secret_basic" if "client_secret_basic" in methods else "client_secret_post"
        offered = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = tuple(a for a in SIGNING_ALGORITHMS if a in offered)
        if not algorithms:
            raise OidcProviderError("the provider signs ID tokens with no algorithm cloudlet accepts")
        provider = Provider(doc["issuer"], token_auth=auth, algorithms=algorithms, **endpoints)
        with self._lock:
            self._provider = (now + DISCOVERY_TTL, provider)
        return provider

    def _keys(self, provider: Provider, *, fresh: bool = False) -> KeySet:
        now = self.clock()
        with self._lock:
            if self._jwks is not None:
                fetched, keys = self._jwks
                # A bad signature asks for a fresh JWKS, but at most every JWKS_MIN_AGE seconds:
                # forged tokens must not make the server hammer the provider.
                if now - fetched < (JWKS_MIN_AGE if fresh else DISCOVERY_TTL):
                    return keys
        try:
            keys = KeySet.import_key_set(self._get_json(provider.jwks_uri, "JWKS"))  # type: ignore[arg-type]
        except (JoseError, ValueError, KeyError, TypeError):
            raise OidcProviderError("the provider's JWKS holds no usable key") from None
        with self._lock:
            self._jwks = (now, keys)
        return keys

    # -- the flow ---------------------------------------------------------------------------------
    def begin(
        self,
        redirect_uri: str,
        *,
        return_to: str | None = None,
        cli_port: int | None = None,
        cli_state: str | None = None,
    ) -> str:
        """Start a sign-in: keep a fresh state, nonce and PKCE verifier, and return the URL of the
        provider's authorization page to send the browser to."""
        _, client_id, _ = self.require_configured()
        provider = self.provider()
        state, nonce, verifier = generate_token(43), generate_token(43), generate_token(64)
        pending = Pending(
            nonce=nonce,
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            expires_at=self.clock() + PENDING_TTL,
            return_to=return_to,
            cli_port=cli_port,
            cli_state=cli_state,
        )
        with transaction(self.sessions) as s:
            self._purge_expired(s)
            count = s.scalar(
                select(func.count())
                .select_from(Meta)
                .where(Meta.key.startswith(STATE_PREFIX, autoescape=True))
            )
            if (count or 0) >= MAX_PENDING:
                raise OidcBusy("too many sign-ins in progress; try again in a few minutes")
            s.add(Meta(key=_state_key(state), value=json.dumps(asdict(pending))))
        return str(
            prepare_grant_uri(
                provider.authorization_endpoint,
                client_id,
                "code",
                redirect_uri=redirect_uri,
                scope=self.settings.oidc_scopes,
                state=state,
                nonce=nonce,
                code_challenge=create_s256_code_challenge(verifier),
                code_challenge_method="S256",
            )
        )

    def _purge_expired(self, s: Session) -> None:
        now = self.clock()
        for row in s.scalars(select(Meta).where(Meta.key.startswith(STATE_PREFIX, autoescape=True))):
            try:
                expired = json.loads(row.value)["expires_at"] <= now
            except (ValueError, KeyError, TypeError):
                expired = True
            if expired:
                s.delete(row)

    def _consume(self, state: str) -> Pending:
        """The pending login of a state, removed in the same (committed) step: a state works once."""
        with transaction(self.sessions) as s:
            row = s.get(Meta, _state_key(state))
            if row is None:
                raise failed("unknown or already used state")
            value = row.value
            gone = s.execute(delete(Meta).where(Meta.key == row.key)).rowcount  # type: ignore[attr-defined]
            if gone != 1:  # a concurrent callback with the same state won
                raise failed("unknown or already used state")
        pending = Pending(**json.loads(value))
        if pending.expires_at <= self.clock():
            raise failed("the sign-in took too long; start again")
        return pending

    def _exchange(self, provider: Provider, code: str, pending: Pending) -> str:
        """Trade the code (with the PKCE verifier) for tokens; returns the raw ID token."""
        _, client_id, secret = self.require_configured()
        body: dict[str, str] = {}
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if provider.token_auth == "client_secret_basic":
            # RFC 6749 §2.3.1: both parts are form-encoded before the Basic encoding.
            auth: httpx.Auth = httpx.BasicAuth(quote_plus(client_id), quote_plus(secret))
        else:
            auth, body = _NoAuth(), {"client_id": client_id, "client_secret": secret}
        form = prepare_token_request(
            "authorization_code",
            code=code,
            redirect_uri=pending.redirect_uri,
            code_verifier=pending.code_verifier,
            **body,
        )
        try:
            with self._http() as http:
                resp = http.post(provider.token_endpoint, content=form, headers=headers, auth=auth)
            data = resp.json()
        except (httpx.HTTPError, ValueError):
            raise OidcProviderError("the provider's token endpoint did not answer") from None
        if resp.status_code != 200 or not isinstance(data, dict):
            error = data.get("error") if isinstance(data, dict) else None
            raise failed(f"the provider refused the code ({str(error or resp.status_code)[:64]})")
        id_token = data.get("id_token")
        if not isinstance(id_token, str):
            raise failed("the provider returned no ID token")
        return id_token

    def _validate(self, provider: Provider, id_token: str, pending: Pending) -> dict[str, Any]:
        """The claims of an ID token signed by the provider, for this client and this login."""
        _, client_id, _ = self.require_configured()
        try:
            try:
                token = jwt.decode(id_token, self._keys(provider), algorithms=list(provider.algorithms))
            except JoseError:  # perhaps the provider rotated its keys: look once more
                token = jwt.decode(
                    id_token, self._keys(provider, fresh=True), algorithms=list(provider.algorithms)
                )
        except (JoseError, ValueError):
            raise failed("the ID token's signature does not check") from None
        registry = jwt.JWTClaimsRegistry(
            now=int(self.clock()),
            leeway=LEEWAY,
            iss={"essential": True, "value": provider.issuer},
            aud={"essential": True, "value": client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": pending.nonce},
        )
        claims = token.claims
        try:
            registry.validate(claims)
        except JoseError as err:
            raise failed(f"the ID token is not valid ({err.description})") from None
        # OIDC Core §3.1.3.7: with several audiences, the authorized party must be this client.
        if isinstance(claims.get("aud"), list) and claims.get("azp", client_id) != client_id:
            raise failed("the ID token was issued to another client")
        return claims

    def sign_in(self, code: str, state: str, jwt_key: str) -> tuple[logins.TokenPair, Pending]:
        """Finish a sign-in from the provider's callback: the cloudlet tokens of the user, and the
        pending login (where the tokens go). Every failure to prove the caller is a 401 ``oidc_failed``."""
        self.require_configured()  # not configured: say so, whatever the callback carries
        pending = self._consume(state)
        provider = self.provider()
        claims = self._validate(provider, self._exchange(provider, code, pending), pending)
        hint = claims.get(self.settings.oidc_username_claim) or claims.get("email")
        name = claims.get("name")
        identity = Identity(
            issuer=provider.issuer,
            subject=str(claims["sub"]),
            username_hint=hint if isinstance(hint, str) else None,
            display_name=name[:128] if isinstance(name, str) else None,
        )
        with transaction(self.sessions) as s:
            user = self.user_for(s, identity)
            pair = logins.start_login(s, jwt_key, user)
        return pair, pending

    # -- accounts ---------------------------------------------------------------------------------
    def user_for(self, s: Session, who: Identity) -> User:
        """The local user of an identity: the one linked to (issuer, subject); else, with
        ``oidc_auto_create``, a new one without a password, named from the username claim (made
        unique: an existing local account of that name is never taken over). Disabled: refused."""
        user = self._linked(s, who)
        if user is None:
            if not self.settings.oidc_auto_create:
                raise Forbidden(
                    "no cloudlet account is linked to this identity; ask an administrator",
                    code="oidc_no_account",
                )
            user = self._create(s, who)
        if user.disabled_at is not None:
            raise Forbidden("this account is disabled", code="account_disabled")
        return user

    def _linked(self, s: Session, who: Identity) -> User | None:
        return s.scalar(select(User).where(User.oidc_issuer == who.issuer, User.oidc_subject == who.subject))

    def _create(self, s: Session, who: Identity) -> User:
        base = username_from(who.username_hint, who.subject)
        for attempt in range(1, 50):
            suffix = "" if attempt == 1 else f"-{attempt}"
            name = base[: 63 - len(suffix)].rstrip("._-") + suffix
            if not USERNAME.fullmatch(name) or s.scalar(select(User.id).where(User.username == name)):
                continue
            user = User(
                username=name,
                display_name=who.display_name,
                password_hash=None,
                oidc_issuer=who.issuer,
                oidc_subject=who.subject,
            )
            try:
                with s.begin_nested():  # a failed flush rolls back (and drops) only this user
                    s.add(user)
                    s.flush()
            except IntegrityError:
                linked = self._linked(s, who)  # a concurrent first sign-in of the same person won
                if linked is not None:
                    return linked
                continue
            return user
        raise Conflict("could not find a free username for this identity", code="name_taken")
