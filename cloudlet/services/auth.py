"""API tokens: random secrets shown once; only their SHA-256 is stored. SHA-256 (not a password hash)
fits because the secret has 256 bits of entropy: there is nothing to brute-force."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloudlet.db.models import DEFAULT_WORKSPACE, ApiToken, Workspace, utcnow
from cloudlet.errors import Unauthorized
from cloudlet.services.context import RequestContext

TOKEN_PREFIX = "clt_"


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_default_workspace(session: Session) -> Workspace:
    ws = session.scalar(select(Workspace).where(Workspace.name == DEFAULT_WORKSPACE))
    if ws is None:
        ws = Workspace(name=DEFAULT_WORKSPACE)
        session.add(ws)
        session.flush()
    return ws


def create_token(session: Session, name: str, *, role: str = "admin", workspace_id: str | None = None) -> str:
    """Store a new token and return its secret (the only time it is ever visible)."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            name=name, token_hash=hash_token(secret), prefix=secret[:10], role=role, workspace_id=workspace_id
        )
    )
    session.flush()
    return secret


def bootstrap_admin_token(session: Session) -> str | None:
    """On first start (no token at all), make the admin token and return it; else None."""
    if session.scalar(select(ApiToken.id).limit(1)) is not None:
        return None
    return create_token(session, "admin", role="admin")


def authenticate(
    session: Session, secret: str, *, source: str | None = None
) -> tuple[RequestContext, str | None]:
    """The request context of a bearer token, and the token id if its last use should be recorded
    (at most once a minute, so that requests stay read-only and SQLite readers never queue)."""
    token = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == hash_token(secret), ApiToken.revoked_at.is_(None))
    )
    if token is None:
        raise Unauthorized("invalid or revoked token", code="invalid_token")
    workspace_id = token.workspace_id
    if workspace_id is None:
        workspace_id = session.scalar(select(Workspace.id).where(Workspace.name == DEFAULT_WORKSPACE))
        if workspace_id is None:
            raise Unauthorized("the default workspace does not exist yet", code="invalid_token")
    stale = token.last_used_at is None or (utcnow() - token.last_used_at).total_seconds() > 60
    ctx = RequestContext(principal=token.name, workspace_id=workspace_id, role=token.role, source=source)
    return ctx, token.id if stale else None


def touch_token(session: Session, token_id: str) -> None:
    session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow()))
