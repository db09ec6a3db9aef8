"""The replaced "Virtual Machine Reservation System" API for API-token holders, on each pool whose
``legacy_api`` setting is on: ``/api/v1/pools/{pool}/legacy/createVM/``, ``checkoutVM/``,
``checkinVM/``, ``deleteVM/``, ``getVM/``, ``getVMStatus/``. The routes and their answers are those
of the reservation listener (``cloudlet.compat.reservation``, one implementation), here with the
caller's rights and HTTP statuses that fit.

Those routes change things on GET, as the original's did, and a browser sends its cookies with
any site's GET (an image, a link): a cookie session could be made to check VMs out from another
site's page. So they take a bearer token only (``Authorization: Bearer``, a token or a sign-in's
access token); a request carrying only the session cookie is refused.
"""

from __future__ import annotations

from fastapi import Request

from cloudlet.api.deps import CloudDep, Ctx
from cloudlet.compat.reservation import Target, reservation_router
from cloudlet.errors import Forbidden, NotFound


def token_target(ref: str, request: Request, cloud: CloudDep, ctx: Ctx) -> Target:
    """The caller, on the workspace's pool ``ref`` if it serves the legacy API (else 404)."""
    if "authorization" not in request.headers:  # authenticated by the session cookie alone
        raise Forbidden(
            "these routes change things on GET: they need an 'Authorization: Bearer' token, "
            "not a browser session",
            code="token_required",
        )
    ctx.require("pool:view")
    with cloud.db.reads() as s:
        try:
            pool = cloud.pools.get(s, ctx, ref)
        except NotFound:
            # not echoing the name: the envelope has no problem+json "detail", where echoing the
            # caller's input is expected
            raise NotFound("pool not found", code="pool_not_found") from None
    if not pool.legacy_api:
        raise NotFound("the legacy API is off for this pool", code="legacy_api_off")
    return Target(cloud, ctx, pool.id)


router = reservation_router(token_target, real_status=True, prefix="/pools/{ref}/legacy")
