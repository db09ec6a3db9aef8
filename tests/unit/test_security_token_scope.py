"""Issue 13, token scopes: every grant is checked against what the caller's credential holds (an
API token's own role), never its user's membership. An owner's admin-role token makes no owners."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.conftest import SimCloud
from tests.unit.test_tenancy import add_member, bearer, login, make_user, token_for


class Caller:
    """Requests with one bearer secret (an API token or an access token)."""

    def __init__(self, sim: SimCloud, secret: str) -> None:
        self.sim, self.headers = sim, bearer(secret)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.sim.client.post(f"/api/v1{path}", json=body, headers=self.headers)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.sim.client.patch(f"/api/v1{path}", json=body, headers=self.headers)

    def delete(self, path: str) -> Any:
        return self.sim.client.delete(f"/api/v1{path}", headers=self.headers)


def denied(resp: Any) -> bool:
    return resp.status_code == 403 and resp.json()["code"] == "permission_denied"  # type: ignore[no-any-return]


@pytest.fixture
def olga(sim: SimCloud) -> str:
    """An owner of workspace `team` (and not a system admin), signed in; pete and rita exist."""
    for name in ("olga", "pete", "rita"):
        make_user(sim, name)
    access = login(sim, "olga")["access_token"]
    assert Caller(sim, access).post("/workspaces", {"name": "team"}).status_code == 201
    return access  # type: ignore[no-any-return]


def test_an_owners_admin_token_cannot_make_owners(sim: SimCloud, olga: str) -> None:
    admin_token = Caller(sim, token_for(sim, olga, "admin", workspace="team"))
    assert denied(admin_token.post("/workspaces/team/members", {"username": "pete", "role": "owner"}))
    assert (
        admin_token.post("/workspaces/team/members", {"username": "pete", "role": "admin"}).status_code == 201
    )
    assert denied(admin_token.patch("/workspaces/team/members/pete", {"role": "owner"}))
    assert denied(admin_token.patch("/workspaces/team/members/olga", {"role": "admin"}))
    assert denied(admin_token.delete("/workspaces/team/members/olga"))
    assert denied(admin_token.delete("/workspaces/team"))
    # olga herself, signed in, still can
    owner = Caller(sim, olga)
    assert owner.patch("/workspaces/team/members/pete", {"role": "owner"}).status_code == 200


def test_an_admin_token_cannot_make_an_owner_token(sim: SimCloud, olga: str) -> None:
    admin_token = Caller(sim, token_for(sim, olga, "admin", workspace="team"))
    made = admin_token.post("/tokens", {"name": "escalate", "role": "owner"})
    assert denied(made)
    assert admin_token.post("/tokens", {"name": "same", "role": "admin"}).status_code == 201
    assert (
        Caller(sim, olga).post("/tokens", {"name": "o", "role": "owner", "workspace": "team"}).status_code
        == 201
    )


def test_a_token_grants_no_more_than_its_own_role(sim: SimCloud, olga: str) -> None:
    owner = Caller(sim, olga)
    manager = {"name": "manager", "permissions": ["member:view", "member:create", "member:edit"]}
    assert owner.post("/workspaces/team/roles", manager).status_code == 201
    token = Caller(sim, token_for(sim, olga, "manager", workspace="team"))
    assert denied(token.post("/workspaces/team/members", {"username": "rita", "role": "admin"}))
    assert denied(token.post("/workspaces/team/roles", {"name": "wider", "permissions": ["instance:delete"]}))
    assert denied(token.post("/tokens", {"name": "wider", "role": "operator"}))
    assert token.post("/workspaces/team/members", {"username": "rita", "role": "manager"}).status_code == 201
    # nor does it change the role of someone holding more than it
    owner.post("/workspaces/team/members", {"username": "pete", "role": "admin"})
    assert denied(token.patch("/workspaces/team/members/pete", {"role": "manager"}))


def test_a_token_reaches_no_other_workspace_of_its_user(sim: SimCloud, olga: str) -> None:
    assert Caller(sim, olga).post("/workspaces", {"name": "other"}).status_code == 201
    team_token = Caller(sim, token_for(sim, olga, "owner", workspace="team"))
    gone = team_token.delete("/workspaces/other")
    assert gone.status_code in (403, 404)
    assert sim.client.get("/api/v1/workspaces", headers=team_token.headers).json()[0]["name"] == "team"
    assert len(sim.client.get("/api/v1/workspaces", headers=team_token.headers).json()) == 1


def test_a_system_admins_smaller_token_has_no_system_admin_powers(sim: SimCloud) -> None:
    make_user(sim, "root", admin=True)
    add_member(sim, "root", "owner")
    access = login(sim, "root")["access_token"]
    admin_token = Caller(sim, token_for(sim, access, "admin"))
    make_user(sim, "sam")
    assert denied(admin_token.post("/workspaces/default/members", {"username": "sam", "role": "owner"}))
    assert denied(
        admin_token.post("/users", {"username": "newadmin", "password": "x" * 12, "is_admin": True})
    )
    assert denied(admin_token.patch("/users/sam", {"is_admin": True}))
    owner_token = Caller(sim, token_for(sim, access, "owner"))
    assert (
        owner_token.post("/workspaces/default/members", {"username": "sam", "role": "owner"}).status_code
        == 201
    )
