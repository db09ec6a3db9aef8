"""Name rules shared by every resource, and name-or-id look-ups."""

from __future__ import annotations

import re
import uuid
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudlet.errors import Conflict, Invalid, NotFound

# Instance and network names double as hostnames and bridge labels: RFC 1123 labels.
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Image names may carry versions: "debian-12.5", "tiny_v2".
IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

M = TypeVar("M")


def check_name(name: str, pattern: re.Pattern[str] = DNS_LABEL, what: str = "name") -> str:
    if not pattern.fullmatch(name):
        rule = (
            "lowercase letters, digits and '-', 1-63 characters, not starting or ending with '-'"
            if pattern is DNS_LABEL
            else "letters, digits, '.', '_' and '-', 1-64 characters, starting with a letter or digit"
        )
        raise Invalid(f"invalid {what} {name!r}: use {rule}", code="invalid_name")
    return name


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def lookup(session: Session, model: type[M], workspace_id: str, ref: str, what: str) -> M:
    """Find a workspace's resource by id or by name; 404 when the workspace has no such thing."""
    ws_col = model.workspace_id  # type: ignore[attr-defined]
    column = model.id if is_uuid(ref) else model.name  # type: ignore[attr-defined]
    row = session.scalar(select(model).where(ws_col == workspace_id, column == ref))
    if row is None:
        raise NotFound(f"{what} {ref!r} not found", code=f"{what}_not_found")
    return row


def insert_unique(session: Session, row: object, conflict: str, code: str = "name_taken") -> None:
    """Add ``row`` and flush it in a savepoint; a unique constraint it breaks (a concurrent twin,
    say) is a 409 with ``conflict`` as its detail, and the caller's transaction goes on."""
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(conflict, code=code) from None
