"""Sign-in through an OpenID Connect provider (authorization code + PKCE).

``/auth/oidc/login`` sends the browser to the provider; the provider sends it back to
``/auth/oidc/callback``, which answers with a cloudlet token pair: as JSON, or handed to where the
login was started from. A dashboard page (``redirect``, a local path) gets the tokens in the URL
fragment, which browsers never send to a server. ``cloudlet login --oidc`` (``cli_port``) gets them
at ``http://127.0.0.1:<cli_port>/callback``: loopback only, so the tokens never leave the machine
the browser runs on.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from cloudlet.api.deps import CloudDep
from cloudlet.api.routers.auth import TokenPairPublic
from cloudlet.errors import Invalid
from cloudlet.services.cloud import Cloud

if TYPE_CHECKING:
    from cloudlet.services.oidc import OidcLogin


def oidc_failed(detail: str) -> Exception:
    from cloudlet.services.oidc import failed

    return failed(detail)


router = APIRouter(prefix="/auth/oidc", tags=["auth"])
CALLBACK = "oidc_callback"
# Tokens in a redirect must not be cached or leak through a Referer header.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache", "Referrer-Policy": "no-referrer"}
LOCAL_PATH = re.compile(r"^/(?![/\\])[^\s#\\]*$")  # "/x", never "//host" or "/\host"
_lock = threading.Lock()


class OidcConfigPublic(BaseModel):
    enabled: bool = Field(description="Whether sign-in through OpenID Connect is offered.")
    issuer: str | None = Field(description="The provider's issuer URL.", examples=["https://id.example.com"])


def _oidc(request: Request, cloud: Cloud) -> OidcLogin:
    # imported on first use: authlib and joserfc cost memory that servers without OIDC need not pay
    from cloudlet.services.oidc import OidcLogin

    """The server's OpenID Connect client, made at first use (it caches the provider's metadata)."""
    with _lock:
        oidc: OidcLogin | None = getattr(request.app.state, "oidc", None)
        if oidc is None:
            oidc = OidcLogin(cloud.settings, cloud.db.sessions)
            request.app.state.oidc = oidc
        return oidc


def _redirect_uri(request: Request, cloud: Cloud) -> str:
    if cloud.settings.public_url:
        return cloud.settings.public_url.rstrip("/") + str(request.app.url_path_for(CALLBACK))
    return str(request.url_for(CALLBACK))


@router.get("/config", response_model=OidcConfigPublic)
def oidc_config(request: Request, cloud: CloudDep) -> OidcConfigPublic:
    """Whether OpenID Connect sign-in is offered, and by which provider (no token needed)."""
    enabled = _oidc(request, cloud).enabled
    return OidcConfigPublic(enabled=enabled, issuer=cloud.settings.oidc_issuer if enabled else None)


@router.get(
    "/login",
    status_code=302,
    response_class=RedirectResponse,
    responses={302: {"description": "To the provider's sign-in page."}},
)
def oidc_login(
    request: Request,
    cloud: CloudDep,
    redirect: Annotated[
        str | None,
        Query(max_length=512, description="A local path of the dashboard to return to with the tokens."),
    ] = None,
    cli_port: Annotated[
        int | None,
        Query(ge=1024, le=65535, description="Port of `cloudlet login --oidc`'s loopback listener."),
    ] = None,
    cli_state: Annotated[
        str | None,
        Query(
            pattern=r"^[A-Za-z0-9_-]{16,128}$",
            description="A random value of the CLI, returned to its listener as `state`.",
        ),
    ] = None,
) -> RedirectResponse:
    """Start an OpenID Connect sign-in: redirects to the provider."""
    if redirect is not None and (cli_port is not None or not LOCAL_PATH.fullmatch(redirect)):
        raise Invalid("redirect must be a local path (and not given with cli_port)", code="invalid_redirect")
    if urlsplit(redirect or "/").netloc:
        raise Invalid("redirect must be a local path", code="invalid_redirect")
    if cli_state is not None and cli_port is None:
        raise Invalid("cli_state goes with cli_port", code="invalid_redirect")
    url = _oidc(request, cloud).begin(
        _redirect_uri(request, cloud), return_to=redirect, cli_port=cli_port, cli_state=cli_state
    )
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})


@router.get(
    "/callback",
    name=CALLBACK,
    response_model=TokenPairPublic,
    responses={302: {"description": "To the dashboard or the CLI's loopback listener, with the tokens."}},
)
def oidc_callback(
    request: Request,
    cloud: CloudDep,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=256)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    """Where the provider returns to: finishes the sign-in and hands out a token pair."""
    oidc = _oidc(request, cloud)
    oidc.require_configured()
    if error is not None:
        raise oidc_failed(f"the provider answered {error[:64]!r}")
    if not code or not state:
        raise oidc_failed("the callback lacks code or state")
    pair, pending = oidc.sign_in(code, state, cloud.jwt_key)
    body = TokenPairPublic(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )
    fields = body.model_dump()
    if pending.cli_port is not None:
        query = urlencode({**fields, **({"state": pending.cli_state} if pending.cli_state else {})})
        return RedirectResponse(f"http://127.0.0.1:{pending.cli_port}/callback?{query}", 302, NO_STORE)
    if pending.return_to is not None:
        return RedirectResponse(f"{pending.return_to}#{urlencode(fields)}", 302, NO_STORE)
    return Response(body.model_dump_json(), media_type="application/json", headers=NO_STORE)
