"""ASGI middleware that records every mutating call (POST, PUT, PATCH, DELETE) in the audit log,
refused ones included: who (from the request's context, or "anonymous"), what (the endpoint and
its path parameters), when, from where, and the HTTP status it ended with."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudlet.services.context import RequestContext

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
# Secrets travel in these bodies; the log keeps only that the call happened.
_SECRET_PATHS = ("/api/v1/auth/",)


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self._record(scope, status)

    def _record(self, scope: Scope, status: int) -> None:
        app = scope.get("app")
        cloud = getattr(getattr(app, "state", None), "cloud", None)
        if cloud is None:
            return
        ctx: RequestContext | None = (scope.get("state") or {}).get("ctx")
        endpoint = scope.get("endpoint")
        params: dict[str, Any] = scope.get("path_params") or {}
        client = scope.get("client")
        cloud.audit.record(
            workspace_id=ctx.workspace_id or None if ctx else None,
            user_id=ctx.user_id if ctx else None,
            principal=ctx.principal if ctx else "anonymous",
            token_id=ctx.token_id if ctx else None,
            action=getattr(endpoint, "__name__", "unknown")[:96],
            method=scope["method"],
            path=scope.get("path", "")[:2000],
            target=" ".join(f"{k}={v}" for k, v in params.items())[:255] or None,
            source=client[0][:64] if client else None,
            status=status,
            result="ok" if status < 400 else ("refused" if status < 500 else "error"),
        )
