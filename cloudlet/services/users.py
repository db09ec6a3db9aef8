"""Local accounts: argon2id password hashes, creation, password changes, disabling.

A new password or a disabled account revokes every sign-in, API token and console ticket the
account had (``end_access``).

Unknown user and wrong password take the same time and give the same error, so a login form
cannot be used to find out which accounts exist.
"""

from __future__ import annotations

import functools
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from cloudlet.db.models import User, utcnow
from cloudlet.errors import Invalid, NotFound, Unauthorized
from cloudlet.services.auth import revoke_credentials
from cloudlet.services.logins import revoke_user_logins
from cloudlet.services.names import insert_unique

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 hashes anything, but a megabyte "password" is a denial of service

# argon2id with OWASP's baseline costs (19 MiB, 2 passes, 1 lane): the library default (64 MiB,
# 4 lanes) would make every sign-in briefly triple a server that otherwise lives in tens of MB.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown users, so they cost as much time as known ones."""
    return _hasher.hash("not a password of anybody")


def check_username(username: str) -> str:
    if not USERNAME.fullmatch(username):
        raise Invalid(
            f"invalid username {username[:64]!r}: "
            "lowercase letters, digits, '.', '_' and '-', 1-63 characters",
            code="invalid_username",
        )
    return username


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise Invalid(f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters", code="weak_password")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def create_user(
    session: Session,
    username: str,
    password: str | None,
    *,
    is_admin: bool = False,
    display_name: str | None = None,
) -> User:
    user = User(
        username=check_username(username),
        password_hash=hash_password(password) if password is not None else None,
        is_admin=is_admin,
        display_name=display_name,
    )
    insert_unique(session, user, f"a user named {username!r} exists", "name_taken")
    return user


def get_user(session: Session, ref: str) -> User:
    user = session.scalar(select(User).where((User.id == ref) | (User.username == ref)))
    if user is None:
        raise NotFound(f"user {ref!r} not found", code="user_not_found")
    return user


def verify_login(session: Session, username: str, password: str) -> User:
    """The user if the password is right and the account enabled; otherwise one error for all."""
    wrong = Unauthorized("invalid username or password", code="invalid_credentials")
    if len(password) > MAX_PASSWORD:
        raise wrong
    user = session.scalar(select(User).where(User.username == username))
    stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise wrong from None
    if user is None or not user.password_hash or user.disabled_at is not None:
        raise wrong
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def end_access(session: Session, user: User) -> None:
    """Revoke everything the user was issued: every sign-in (and with it its access tokens),
    every API token, every unused console ticket. For a new password (whoever knew the old one
    keeps nothing it opened) and a disabled account (enabling it again revives nothing)."""
    revoke_user_logins(session, user.id)
    revoke_credentials(session, user.id)


def set_password(session: Session, user: User, new: str) -> None:
    """A new password; everything issued under the old one is revoked."""
    user.password_hash = hash_password(new)
    end_access(session, user)


def change_password(session: Session, user: User, old: str, new: str) -> None:
    """The user's own change: the current password is checked first."""
    try:
        _hasher.verify(user.password_hash or _dummy_hash(), old)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise Unauthorized("the current password is wrong", code="invalid_credentials") from None
    set_password(session, user, new)


def set_disabled(user: User, disabled: bool) -> None:
    """Disable (everything issued is revoked; it stops working at once) or enable an account."""
    if disabled and user.disabled_at is None:
        session = object_session(user)
        assert session is not None, "a user to disable comes from a session"
        end_access(session, user)
    user.disabled_at = (user.disabled_at or utcnow()) if disabled else None
