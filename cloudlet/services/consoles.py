"""A running VM's consoles: its serial port and its screen (VNC), typed text and screenshots.

A console gives control of the guest, so every way in needs ``instance:edit``. Browsers and noVNC
cannot put an Authorization header on a websocket, so a caller first asks for a one-time ticket
(valid ``TICKET_TTL`` seconds, bound to one console of one instance, its workspace and the caller)
and opens the websocket with it. Tickets live in the database as SHA-256 hashes and are redeemed
by one conditional update, so each works exactly once however many server replicas share it.

A ticket stands for the credential it was issued under (an API token, or a sign-in) and is
checked again, live, when redeemed: that token or sign-in must still be valid and its user still
hold ``instance:edit`` in the workspace. Signing out, a password change, a removal from the
workspace or a lost permission ends the tickets issued before it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cloudlet.db.models import ConsoleTicket, Instance, utcnow
from cloudlet.db.session import SessionFactory, transaction
from cloudlet.drivers import keymap
from cloudlet.drivers.base import ComputeDriver, ConsoleStream
from cloudlet.errors import Forbidden, Invalid, InvalidState, NotFound, Unauthorized
from cloudlet.services.auth import live_context
from cloudlet.services.context import RequestContext
from cloudlet.services.instances import Instances

PERMISSION = "instance:edit"
TICKET_TTL = 30.0  # seconds
TICKET_PREFIX = "cct_"
# Keys go at the pace QEMU types them (measured: 256 lower-case letters 8 s, mixed text 9 s, all
# capitals 16 s under TCG): this keeps one request within about 16 seconds.
MAX_TYPED_CHARS = 256


class ConsoleKind(StrEnum):
    VNC = "vnc"
    SERIAL = "serial"


@dataclass(frozen=True)
class Ticket:
    secret: str  # shown once; only its hash is stored
    instance_id: str
    console: ConsoleKind
    expires_at: datetime


@dataclass(frozen=True)
class Target:
    """The running VM a console call reaches, with the caller (a ticket's holder, for tickets)."""

    ctx: RequestContext
    instance_id: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Consoles:
    def __init__(self, sessions: SessionFactory, instances: Instances, ttl: float = TICKET_TTL) -> None:
        self.sessions = sessions
        self.instances = instances
        self.ttl = ttl

    @property
    def compute(self) -> ComputeDriver:
        return self.instances.compute

    # -- which VM ----------------------------------------------------------------------------------
    def _vm(self, session: Session, ctx: RequestContext, ref: str) -> Instance:
        row = self.instances.get(session, ctx, ref)
        if row.kind != "vm":
            raise Invalid(
                f"{row.name!r} is a {row.kind}: containers have exec and logs, not a console",
                code="not_a_vm",
            )
        return row

    def target(self, ctx: RequestContext, ref: str) -> Target:
        """The caller's running VM ``ref`` (404 unknown, 422 a container, 409 not running)."""
        ctx.require(PERMISSION)
        with self.sessions() as s:
            row = self._vm(s, ctx, ref)
            if row.state != "running":
                raise InvalidState(
                    f"VM {row.name!r} is {row.state}: consoles need it running",
                    code="instance_not_running",
                    state=row.state,
                )
            return Target(ctx, row.id)

    # -- tickets -----------------------------------------------------------------------------------
    def issue_ticket(self, ctx: RequestContext, ref: str, console: ConsoleKind) -> Ticket:
        """A one-time ticket for ``console`` of the caller's running VM ``ref``."""
        target = self.target(ctx, ref)
        secret = TICKET_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        expires = now + timedelta(seconds=self.ttl)
        with transaction(self.sessions) as s:
            # Housekeeping on the way: tickets past their time are worth nothing.
            s.execute(delete(ConsoleTicket).where(ConsoleTicket.expires_at < now - timedelta(minutes=5)))
            s.add(
                ConsoleTicket(
                    secret_hash=_hash(secret),
                    instance_id=target.instance_id,
                    workspace_id=ctx.workspace_id,
                    console=console.value,
                    principal=ctx.principal,
                    user_id=ctx.user_id,
                    token_id=ctx.token_id,
                    login_id=ctx.login_id,
                    created_at=now,
                    expires_at=expires,
                )
            )
        return Ticket(secret, target.instance_id, console, expires)

    def redeem(self, secret: str, ref: str, console: ConsoleKind, source: str | None = None) -> Target:
        """Use a ticket for ``console`` of VM ``ref``; it works once, before it expires, for the
        instance, workspace and console it was issued for. Returns the running VM and the context
        of the ticket's holder (who may only use consoles with it)."""
        if not secret.startswith(TICKET_PREFIX) or len(secret) > 200:
            raise Unauthorized("not a console ticket", code="invalid_ticket")
        digest = _hash(secret)
        now = utcnow()
        with transaction(self.sessions) as s:
            ticket = s.scalar(select(ConsoleTicket).where(ConsoleTicket.secret_hash == digest))
            if ticket is None:
                raise Unauthorized("unknown console ticket", code="invalid_ticket")
            ctx = RequestContext(
                principal=ticket.principal,
                workspace_id=ticket.workspace_id,
                role="console ticket",
                source=source,
                user_id=ticket.user_id,
                token_id=ticket.token_id,
                permissions=frozenset({PERMISSION}),
            )
            try:
                wanted = self.instances.get(s, ctx, ref).id
            except NotFound:
                wanted = None
            if wanted != ticket.instance_id or ticket.console != console.value:
                raise Forbidden(
                    f"this ticket is for another {'instance' if wanted != ticket.instance_id else 'console'}",
                    code="ticket_mismatch",
                )
            self._check_issuer(s, ticket, source)
            # The one conditional update: of two replicas redeeming at once, one wins.
            used = s.execute(
                update(ConsoleTicket)
                .where(
                    ConsoleTicket.id == ticket.id,
                    ConsoleTicket.used_at.is_(None),
                    ConsoleTicket.expires_at > now,
                )
                .values(used_at=now)
            )
            if used.rowcount != 1:  # type: ignore[attr-defined]
                s.refresh(ticket)
                if ticket.used_at is not None:
                    raise Unauthorized("this console ticket was used already", code="ticket_used")
                raise Unauthorized("this console ticket expired", code="ticket_expired")
        return self.target(ctx, ticket.instance_id)

    @staticmethod
    def _check_issuer(session: Session, ticket: ConsoleTicket, source: str | None) -> None:
        """401 ``credential_revoked`` when the token or sign-in the ticket was issued under has
        ended (or its user was disabled); 403 when the user no longer holds ``instance:edit``
        there (removed from the workspace, a smaller role, a token's role changed)."""
        holder = live_context(
            session,
            user_id=ticket.user_id,
            token_id=ticket.token_id,
            login_id=ticket.login_id,
            workspace_id=ticket.workspace_id,
            source=source,
        )
        if not holder.can(PERMISSION):
            raise Forbidden(
                f"the ticket's holder no longer holds {PERMISSION} here", code="permission_denied"
            )

    # -- the consoles ------------------------------------------------------------------------------
    def open_serial(self, target: Target) -> ConsoleStream:
        return self.compute.open_serial_console(target.instance_id)

    def open_vnc(self, target: Target) -> ConsoleStream:
        return self.compute.open_vnc(target.instance_id)

    def type_text(self, ctx: RequestContext, ref: str, text: str) -> int:
        """Type ``text`` on the VM's keyboard (US layout); returns the number of keys typed."""
        if not text:
            raise Invalid("nothing to type", code="empty_text")
        if len(text) > MAX_TYPED_CHARS:
            raise Invalid(f"at most {MAX_TYPED_CHARS} characters can be typed at once", code="text_too_long")
        bad = keymap.untypable(text)
        if bad:
            raise Invalid(
                f"these characters cannot be typed on a US keyboard: {keymap.describe(bad)}",
                code="untypable_text",
                characters=bad,
            )
        target = self.target(ctx, ref)
        chords = keymap.chords(text)
        self.compute.send_keys(target.instance_id, chords)
        return len(chords)

    def screenshot(self, ctx: RequestContext, ref: str) -> bytes:
        """The VM's screen as PNG."""
        return self.compute.screenshot(self.target(ctx, ref).instance_id)
