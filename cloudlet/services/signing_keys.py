"""Where the key that signs sign-in tokens (HS256 JWTs) is kept: a file of its own, never the
database, whose copies (backups, a readable SQLite file, a database dump) would let their reader
sign a system admin's token.

The key is ``jwt_secret`` when set (environment or config file); else the content of the key
file (``jwt_key_file``, default ``<data_dir>/jwt.key``, mode 0600), made with a random key at the
first start. An older version kept the key in the database (the ``meta`` row ``jwt_secret``): at
the first start of this version it moves to the key file, so tokens signed before stay valid,
and leaves the database.

The database keeps only the key's fingerprint (an HMAC of a fixed text under the key, which tells
nothing of it). Replicas sharing one database must sign with one key: a replica that has no key
while the database has seen one refuses to start, instead of making its own and handing out
tokens the others reject."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from sqlalchemy.orm import Session

from cloudlet.db.models import Meta
from cloudlet.errors import CloudletError
from cloudlet.filemodes import PRIVATE_FILE

log = logging.getLogger(__name__)

LEGACY_ROW = "jwt_secret"  # where versions before the key file kept the key
FINGERPRINT_ROW = "jwt_key_fingerprint"
_FINGERPRINT_TEXT = b"cloudlet sign-in key fingerprint"


class SigningKeyMissing(CloudletError):
    status, code, title = 500, "signing_key_missing", "No sign-in key"


def fingerprint(key: str) -> str:
    return hmac.new(key.encode(), _FINGERPRINT_TEXT, hashlib.sha256).hexdigest()


def read_key_file(path: Path) -> str | None:
    """The key in ``path``, without surrounding blanks; None when there is no such file."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def write_key_file(path: Path, key: str) -> str:
    """Create ``path`` (0600) holding ``key`` unless it exists; returns the key the file holds
    then, so of two servers making it at once both use the one that won."""
    if not path.parent.is_dir():
        raise SigningKeyMissing(f"cannot make the sign-in key file {path}: its folder does not exist")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic, and never over an existing key
    finally:
        tmp.unlink(missing_ok=True)
    return read_key_file(path) or key


def load(session: Session, key_file: Path, *, shared_database: bool) -> str:
    """The key in ``key_file``: read, or moved there from the database (an older version's),
    or made at the first start. ``shared_database``: other servers may use this database (it
    is not a SQLite file in one data folder), so a missing key must not be made anew."""
    legacy = session.get(Meta, LEGACY_ROW)
    key = read_key_file(key_file)
    if key is None and legacy is not None:
        key = write_key_file(key_file, legacy.value)
        log.warning("moved the sign-in key out of the database into %s", key_file)
    elif key is None:
        seen = session.get(Meta, FINGERPRINT_ROW)
        if seen is not None and shared_database:
            raise SigningKeyMissing(
                f"this database's sign-in tokens are signed with a key this server does not have "
                f"(no {key_file}): replicas sharing a database must share one key; copy the key file "
                f"of a server that has it to {key_file}, or point every replica at one file "
                f"(jwt_key_file) or one jwt_secret"
            )
        key = write_key_file(key_file, secrets.token_urlsafe(48))
        log.info("made a new sign-in key in %s", key_file)
    adopt(session, key)
    return key


def adopt(session: Session, key: str) -> None:
    """Record that this deployment signs with ``key`` (its fingerprint) and drop a key an older
    version kept in the database."""
    legacy = session.get(Meta, LEGACY_ROW)
    if legacy is not None:
        if legacy.value != key:
            log.warning("an older sign-in key was left in the database: removed (its tokens end)")
        session.delete(legacy)
    mark = fingerprint(key)
    seen = session.get(Meta, FINGERPRINT_ROW)
    if seen is None:
        session.add(Meta(key=FINGERPRINT_ROW, value=mark))
    elif seen.value != mark:
        log.warning(
            "the sign-in key differs from the one this database saw last: sign-ins made before end "
            "(if another server on this database still uses the other key, give both the same one)"
        )
        seen.value = mark
    session.flush()
