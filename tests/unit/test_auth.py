"""API tokens: the secret is never stored, revoked tokens stop working."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import select, text, update

from cloudlet.db.models import ApiToken, utcnow
from cloudlet.db.session import transaction
from cloudlet.services.auth import bootstrap, create_token, find_role
from tests.unit.conftest import SimCloud


def token_rows(sim: SimCloud) -> list[dict[str, object]]:
    with sim.cloud.db.sessions() as s:
        return [dict(r._mapping) for r in s.execute(text("SELECT * FROM api_tokens"))]


def test_first_start_makes_one_admin_token(sim: SimCloud) -> None:
    assert sim.token.startswith("clt_")
    assert len(sim.token) > 40
    rows = token_rows(sim)
    assert len(rows) == 1
    assert (rows[0]["name"], rows[0]["role"]) == ("admin", "owner")


def test_only_the_sha256_of_the_token_is_stored(sim: SimCloud) -> None:
    assert sim.get("/api/v1/info").status_code == 200  # a use, so last_used_at is written too
    (row,) = token_rows(sim)
    assert row["token_hash"] == hashlib.sha256(sim.token.encode()).hexdigest()
    for column, value in row.items():
        assert sim.token not in str(value), f"api_tokens.{column} holds the secret"


def test_the_secret_is_nowhere_in_the_database_files(sim: SimCloud) -> None:
    sim.get("/api/v1/info")
    files = [p for p in sim.data_dir.iterdir() if p.name.startswith("cloudlet.db")]
    assert files
    secret_part = sim.token[10:].encode()  # past the displayed prefix
    for path in files:
        assert secret_part not in path.read_bytes(), f"{path.name} holds the token secret"


def test_a_second_start_makes_no_new_token(sim: SimCloud) -> None:
    with transaction(sim.cloud.db.sessions) as s:
        assert bootstrap(s) is None
    assert len(token_rows(sim)) == 1


def test_revoked_token_is_401(sim: SimCloud) -> None:
    assert sim.get("/api/v1/instances").status_code == 200
    with transaction(sim.cloud.db.sessions) as s:
        s.execute(update(ApiToken).values(revoked_at=utcnow()))

    resp = sim.get("/api/v1/instances")

    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == "invalid_token"


def test_other_tokens_keep_working_when_one_is_revoked(sim: SimCloud) -> None:
    with transaction(sim.cloud.db.sessions) as s:
        admin = s.scalar(select(ApiToken)).user_id
        ws = s.scalar(select(ApiToken)).workspace_id
        _, second = create_token(s, "ci", user_id=admin, workspace_id=ws, role=find_role(s, ws, "viewer"))
        s.execute(update(ApiToken).where(ApiToken.name == "admin").values(revoked_at=utcnow()))
    assert sim.get("/api/v1/networks").status_code == 401
    resp = sim.client.get("/api/v1/networks", headers={"Authorization": f"Bearer {second}"})
    assert resp.status_code == 200
    assert [n["name"] for n in resp.json()] == ["default"]


def test_use_is_recorded(sim: SimCloud) -> None:
    with transaction(sim.cloud.db.sessions) as s:
        s.execute(update(ApiToken).values(last_used_at=utcnow() - timedelta(hours=1)))
    sim.get("/api/v1/info")
    with sim.cloud.db.sessions() as s:
        last_used = s.scalar(select(ApiToken.last_used_at))
    assert last_used is not None
    assert utcnow() - last_used < timedelta(minutes=1)


def test_token_is_case_sensitive_and_whole(sim: SimCloud) -> None:
    for wrong in (sim.token.upper(), sim.token[:-1], sim.token + "x", sim.token[:10]):
        resp = sim.client.get("/api/v1/info", headers={"Authorization": f"Bearer {wrong}"})
        assert resp.status_code == 401, wrong
