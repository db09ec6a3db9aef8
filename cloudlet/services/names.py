"""Name rules shared by every resource, and name-or-id look-ups.

Most names double as hostnames, bridge labels or Docker names, so they are RFC 1123 labels. VM
names are wider: the systems cloudlet replaces took names such as ``my_vm`` or ``Test.VM``, and
their users' scripts still send them. A VM name is shown back exactly as given, and everything
DNS-bound (the guest hostname, the network's DHCP/DNS entry) uses ``hostname_for(name)``, a label
derived from it (``my_vm`` -> ``my-vm``). A VM name is still safe to carry anywhere: printable
characters only (no control, format or separator characters but the plain space), no ``/``, not
``.`` or ``..``, no surrounding spaces, at most 63 characters; it is never pasted into a path, a
command or a document unescaped (XML and JSON go through builders, URLs are percent-encoded).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
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
VM_NAME_MAX = 63  # the width of the name columns, and of a DNS label

M = TypeVar("M")


def check_name(name: str, pattern: re.Pattern[str] = DNS_LABEL, what: str = "name") -> str:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        rule = (
            "lowercase letters, digits and '-', 1-63 characters, not starting or ending with '-'"
            if pattern is DNS_LABEL
            else "letters, digits, '.', '_' and '-', 1-64 characters, starting with a letter or digit"
        )
        raise Invalid(f"invalid {what} {name!r}: use {rule}", code="invalid_name")
    return name


def check_vm_name(name: str, what: str = "instance name") -> str:
    """``name`` if it is a valid VM name (see the module doc), else 422 ``invalid_name``."""
    problem = _vm_name_problem(name)
    if problem:
        shown = repr(name[: VM_NAME_MAX + 1]) if isinstance(name, str) else repr(name)
        raise Invalid(f"invalid {what} {shown}: {problem}", code="invalid_name")
    return name


def _vm_name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name:
        return "a name is 1 to 63 characters of text"
    if len(name) > VM_NAME_MAX:
        return f"at most {VM_NAME_MAX} characters"
    if not name.isprintable():  # control, format, line/paragraph separators, unassigned...
        return "use printable characters only (no control or invisible characters)"
    if "/" in name:
        return "'/' is not allowed"
    if name in (".", ".."):
        return "'.' and '..' are not names"
    if name != name.strip():
        return "no spaces at the start or the end"
    return None


def hostname_for(name: str) -> str:
    """The guest hostname a VM named ``name`` gets: the name itself when it is a DNS label, else
    one made from it: accents dropped, lower case, each run of other characters one '-', cut to
    63 (``My_VM`` -> ``my-vm``, ``Test.VM`` -> ``test-vm``). A name with no letter or digit in
    ASCII gets ``vm-`` and a digest of the name."""
    if DNS_LABEL.fullmatch(name):
        return name
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    label = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[:63].rstrip("-")
    return label or "vm-" + hashlib.sha256(name.encode()).hexdigest()[:8]


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
    try:
        with session.begin_nested():  # added inside: begin_nested flushes what is pending first
            session.add(row)
            session.flush()
    except IntegrityError:
        raise Conflict(conflict, code=code) from None
