"""Issue 13, console tickets: a ticket dies with its issuer's access. It is checked again when it
is redeemed: the API token or sign-in that asked for it must still be live, and its user still
hold instance:edit in the workspace."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.conftest import SimCloud
from tests.unit.test_consoles import refused
from tests.unit.test_tenancy import add_member, bearer, login, make_user, token_for

VNC = "/api/v1/instances/web/console/vnc"


def ticket_with(sim: SimCloud, secret: str) -> str:
    resp = sim.client.post(
        "/api/v1/instances/web/console/ticket", json={"console": "vnc"}, headers=bearer(secret)
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["ticket"]  # type: ignore[no-any-return]


def protocols(ticket: str) -> list[str]:
    """How a browser offers a ticket: as a subprotocol, never in the URL."""
    return ["binary", f"ticket.{ticket}"]


def opens(sim: SimCloud, ticket: str) -> bool:
    with sim.client.websocket_connect(VNC, subprotocols=protocols(ticket)) as ws:
        return ws.receive_bytes() == b"RFB 003.008\n"


@pytest.fixture
def otto(sim: SimCloud, create_vm: Callable[..., object]) -> dict[str, str]:
    """An operator of the default workspace with a running VM `web`: his sign-in and a token."""
    create_vm("web")
    make_user(sim, "otto")
    add_member(sim, "otto", "operator")
    pair = login(sim, "otto")
    return {**pair, "token": token_for(sim, pair["access_token"], "operator")}


def test_a_ticket_still_opens_while_its_issuer_keeps_access(sim: SimCloud, otto: dict[str, str]) -> None:
    assert opens(sim, ticket_with(sim, otto["access_token"]))
    assert opens(sim, ticket_with(sim, otto["token"]))


def test_a_ticket_is_refused_once_its_issuer_was_removed(sim: SimCloud, otto: dict[str, str]) -> None:
    by_sign_in, by_token = ticket_with(sim, otto["access_token"]), ticket_with(sim, otto["token"])
    assert sim.delete("/api/v1/workspaces/default/members/otto").status_code == 204
    for ticket in (by_sign_in, by_token):
        code, _ = refused(sim, VNC, subprotocols=protocols(ticket))
        assert code in (4401, 4403)


def test_a_ticket_is_refused_once_its_sign_in_ended(sim: SimCloud, otto: dict[str, str]) -> None:
    ticket = ticket_with(sim, otto["access_token"])
    sim.client.post("/api/v1/auth/logout", json={"refresh_token": otto["refresh_token"]})
    code, reason = refused(sim, VNC, subprotocols=protocols(ticket))
    assert (code, reason.split(":")[0]) == (4401, "credential_revoked")


def test_a_ticket_is_refused_once_its_token_was_revoked(sim: SimCloud, otto: dict[str, str]) -> None:
    ticket = ticket_with(sim, otto["token"])
    sim.client.delete("/api/v1/tokens/t-operator", headers=bearer(otto["access_token"]))
    code, reason = refused(sim, VNC, subprotocols=protocols(ticket))
    assert (code, reason.split(":")[0]) == (4401, "credential_revoked")


def test_a_ticket_is_refused_once_its_holder_lost_the_permission(sim: SimCloud, otto: dict[str, str]) -> None:
    ticket = ticket_with(sim, otto["access_token"])
    demoted = sim.client.patch(
        "/api/v1/workspaces/default/members/otto", json={"role": "viewer"}, headers=sim.headers
    )
    assert demoted.status_code == 200
    code, _ = refused(sim, VNC, subprotocols=protocols(ticket))
    assert code in (4401, 4403)
