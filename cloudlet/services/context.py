"""Who is asking, and in which workspace. Every service call takes one; multi-user tenancy fills in
more of it (user, role permissions) without changing the routes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    principal: str  # who: a token name now, a user later
    workspace_id: str  # the scope every query is filtered by
    role: str = "admin"
    source: str | None = None  # client address, for the audit log
