"""Sign-in sessions: a short-lived JWT access token plus a rotating, revocable refresh token.

The access token names its login (``sid``, the refresh family), so signing out or a detected
refresh-token theft revokes every token of that login at once, not only after expiry. Refresh
tokens are random secrets stored as SHA-256 hashes; each use replaces the presented one, and
presenting a replaced one again revokes the family.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloudlet.db.models import RefreshToken, User, utcnow
from cloudlet.errors import CloudletError, Unauthorized
from cloudlet.services import signing_keys

ACCESS_TTL = timedelta(minutes=15)
REFRESH_TTL = timedelta(days=30)
ISSUER = "cloudlet"
ALGORITHM = "HS256"
REFRESH_PREFIX = "clr_"
# Secrets people paste from examples; the server refuses to sign with them.
KNOWN_WEAK = {"secret", "changeme", "change-me", "password", "cloudlet", "default", "test", "jwt-secret"}


class WeakSecret(CloudletError):
    status, code, title = 500, "weak_secret", "Refusing a weak secret"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"


def signing_key(session: Session, configured: str | None, key_file: Path, *, shared_database: bool) -> str:
    """The configured secret, else the key kept in ``key_file`` (made at first start, or moved
    there from the database where older versions kept it: see ``signing_keys``); a weak one is
    refused. Every replica must sign and check with the same key."""
    key = (
        configured
        if configured is not None
        else signing_keys.load(session, key_file, shared_database=shared_database)
    )
    if len(key) < 32 or key.lower() in KNOWN_WEAK:
        what = "jwt_secret" if configured is not None else f"the key in {key_file}"
        raise WeakSecret(
            f"{what} must be at least 32 characters and not a well-known default; "
            "leave jwt_secret unset to have cloudlet generate a key"
        )
    if configured is not None:
        signing_keys.adopt(session, configured)
    return key


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _access_token(key: str, user: User, family_id: str) -> str:
    now = utcnow()
    claims = {
        "iss": ISSUER,
        "sub": user.id,
        "sid": family_id,
        "typ": "access",
        "iat": now,
        "exp": now + ACCESS_TTL,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def _new_refresh(session: Session, user_id: str, family_id: str) -> str:
    secret = REFRESH_PREFIX + secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            user_id=user_id, family_id=family_id, token_hash=_hash(secret), expires_at=utcnow() + REFRESH_TTL
        )
    )
    session.flush()
    return secret


def start_login(session: Session, key: str, user: User) -> TokenPair:
    family_id = str(uuid.uuid4())
    refresh = _new_refresh(session, user.id, family_id)
    return TokenPair(_access_token(key, user, family_id), refresh, int(ACCESS_TTL.total_seconds()))


def refresh_login(session: Session, key: str, secret: str) -> tuple[TokenPair | None, CloudletError | None]:
    """Rotate a refresh token. Returns the new pair, or the error to answer with; on reuse the
    family is revoked in this same transaction (so the caller must commit, then raise)."""
    invalid = Unauthorized("invalid or expired refresh token", code="invalid_refresh_token")
    row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == _hash(secret)))
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        return None, invalid
    if row.used_at is not None:
        revoke_family(session, row.family_id)
        return None, Unauthorized(
            "this refresh token was already used: the login is revoked (was it stolen?)",
            code="refresh_reused",
        )
    user = session.get(User, row.user_id)
    if user is None or user.disabled_at is not None:
        return None, invalid
    claimed = session.execute(  # type: ignore[attr-defined]
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=utcnow())
    ).rowcount
    if claimed != 1:  # a concurrent refresh with the same token won: that is reuse too
        revoke_family(session, row.family_id)
        return None, Unauthorized("this refresh token was already used", code="refresh_reused")
    refresh = _new_refresh(session, user.id, row.family_id)
    return TokenPair(_access_token(key, user, row.family_id), refresh, int(ACCESS_TTL.total_seconds())), None


def revoke_family(session: Session, family_id: str) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def revoke_user_logins(session: Session, user_id: str) -> None:
    """End every sign-in of a user (a password change, a disabled account): their refresh tokens
    stop working, and the access tokens of those sign-ins with them (``login_active``)."""
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def logout(session: Session, secret: str) -> None:
    row = session.scalar(select(RefreshToken).where(RefreshToken.token_hash == _hash(secret)))
    if row is not None:
        revoke_family(session, row.family_id)


def decode_access(key: str, token: str) -> dict[str, Any]:
    """The claims of a valid access token; anything else (bad signature, ``alg: none``, another
    algorithm, expired, malformed, a refresh token) is a 401."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "sid", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the access token has expired; refresh it", code="token_expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("invalid access token", code="invalid_token") from None
    if claims.get("typ") != "access":
        raise Unauthorized("invalid access token", code="invalid_token")
    return claims


def login_active(session: Session, family_id: str) -> bool:
    """Whether the login an access token belongs to is still live (not signed out, not revoked)."""
    return (
        session.scalar(
            select(RefreshToken.id)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .limit(1)
        )
        is not None
    )
