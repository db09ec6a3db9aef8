"""Issue 13, tokens outliving what they stood for: a password change, disabling an account, a
member's removal and a role change revoke what was issued before (sign-ins, API tokens)."""

from __future__ import annotations

from typing import Any

from cloudlet.db.session import transaction
from cloudlet.services import users
from tests.unit.conftest import SimCloud
from tests.unit.test_tenancy import PASSWORD, add_member, bearer, login, make_user, token_for

NEW_PASSWORD = "a brand new passphrase"


def status(sim: SimCloud, token: str) -> int:
    return sim.client.get("/api/v1/instances", headers=bearer(token)).status_code  # type: ignore[no-any-return]


def refresh(sim: SimCloud, refresh_token: str) -> Any:
    return sim.client.post("/api/v1/auth/refresh", json={"refresh_token": refresh_token})


def test_a_password_change_revokes_every_sign_in_and_token_but_keeps_the_caller_in(sim: SimCloud) -> None:
    make_user(sim, "alice")
    add_member(sim, "alice", "operator")
    first, other = login(sim, "alice"), login(sim, "alice")  # two sign-ins (two devices)
    api_token = token_for(sim, first["access_token"], "viewer")
    assert status(sim, first["access_token"]) == status(sim, api_token) == 200

    changed = sim.client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(first["access_token"]),
    )
    assert changed.status_code == 200, changed.text
    fresh = changed.json()

    for old in (first["access_token"], other["access_token"], api_token):
        assert status(sim, old) == 401, "a credential of the old password still works"
    for old in (first["refresh_token"], other["refresh_token"]):
        assert refresh(sim, old).status_code == 401
    # the caller was given a fresh sign-in, which works and refreshes
    assert status(sim, fresh["access_token"]) == 200
    renewed = refresh(sim, fresh["refresh_token"])
    assert renewed.status_code == 200 and status(sim, renewed.json()["access_token"]) == 200


def test_a_browser_sessions_password_change_gets_new_cookies(sim: SimCloud) -> None:
    make_user(sim, "bea")
    add_member(sim, "bea", "viewer")
    signed_in = sim.client.post("/api/v1/auth/session", json={"username": "bea", "password": PASSWORD})
    old_access = sim.client.cookies["cloudlet_access"]
    csrf = signed_in.json()["csrf_token"]
    changed = sim.client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers={"X-CSRF-Token": csrf},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["access_token"] is None and body["csrf_token"]  # tokens stay out of the page
    assert sim.client.cookies["cloudlet_access"] != old_access
    assert sim.client.get("/api/v1/instances").status_code == 200  # the new cookie session works
    assert status(sim, old_access) == 401
    sim.client.cookies.clear()


def test_an_admin_setting_a_password_or_disabling_revokes_and_enabling_revives_nothing(
    sim: SimCloud,
) -> None:
    make_user(sim, "carl")
    add_member(sim, "carl", "operator")
    pair = login(sim, "carl")
    api_token = token_for(sim, pair["access_token"], "viewer")
    reset = sim.client.patch("/api/v1/users/carl", json={"password": NEW_PASSWORD}, headers=sim.headers)
    assert reset.status_code == 200
    assert status(sim, pair["access_token"]) == status(sim, api_token) == 401
    assert refresh(sim, pair["refresh_token"]).status_code == 401

    pair = login(sim, "carl", NEW_PASSWORD)
    api_token = token_for(sim, pair["access_token"], "viewer")
    assert (
        sim.client.patch("/api/v1/users/carl", json={"disabled": True}, headers=sim.headers).status_code
        == 200
    )
    assert (
        sim.client.patch("/api/v1/users/carl", json={"disabled": False}, headers=sim.headers).status_code
        == 200
    )
    assert status(sim, pair["access_token"]) == status(sim, api_token) == 401
    assert refresh(sim, pair["refresh_token"]).status_code == 401
    assert status(sim, login(sim, "carl", NEW_PASSWORD)["access_token"]) == 200


def test_the_service_revokes_for_any_caller_of_set_password(sim: SimCloud) -> None:
    """The CLI and other server-side callers reach the same revocation."""
    make_user(sim, "cora")
    add_member(sim, "cora", "viewer")
    api_token = token_for(sim, login(sim, "cora")["access_token"], "viewer")
    with transaction(sim.cloud.db.sessions) as s:
        users.set_password(s, users.get_user(s, "cora"), NEW_PASSWORD)
    assert status(sim, api_token) == 401


def test_a_removed_members_tokens_die_and_stay_dead_when_re_added(sim: SimCloud) -> None:
    make_user(sim, "dora")
    add_member(sim, "dora", "operator")
    access = login(sim, "dora")["access_token"]
    api_token = token_for(sim, access, "operator")
    assert status(sim, api_token) == 200
    assert sim.delete("/api/v1/workspaces/default/members/dora").status_code == 204
    assert status(sim, api_token) == 401
    add_member(sim, "dora", "operator")
    assert status(sim, api_token) == 401, "re-adding the member revived an old token"
    assert status(sim, access) == 200  # her sign-in follows her live membership


def test_a_role_change_revokes_the_members_tokens(sim: SimCloud) -> None:
    make_user(sim, "emil")
    add_member(sim, "emil", "admin")
    access = login(sim, "emil")["access_token"]
    api_token = token_for(sim, access, "admin")
    demoted = sim.client.patch(
        "/api/v1/workspaces/default/members/emil", json={"role": "viewer"}, headers=sim.headers
    )
    assert demoted.status_code == 200
    assert status(sim, api_token) == 401
    sim.client.patch("/api/v1/workspaces/default/members/emil", json={"role": "admin"}, headers=sim.headers)
    assert status(sim, api_token) == 401, "promoting back revived a token of the old role"
    # a role "change" to the same role revokes nothing
    kept = token_for(sim, access, "viewer")
    sim.client.patch("/api/v1/workspaces/default/members/emil", json={"role": "admin"}, headers=sim.headers)
    assert status(sim, kept) == 200
