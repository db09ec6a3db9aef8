"""Issue 13, login throttling: failures slow down the (account, address) pair and the address
that made them, with a growing wait; nobody can lock an account's owner out by failing against
it. The throttle on an injected clock, then the sign-in routes from several client addresses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from cloudlet.services.ratelimit import ADDRESS_FACTOR, PRESSURE_DELAY, LoginThrottle, TooManyAttempts
from tests.unit.conftest import SimCloud
from tests.unit.test_tenancy import PASSWORD, make_user

ALICE, BOB = "user:alice", "user:bob"
A, B = "198.51.100.7", "192.0.2.10"  # documentation addresses: strings only, nothing is sent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: LoginThrottle, account: str, address: str, times: int = 1) -> None:
    """``times`` attempts that turn out wrong (an attempt is counted when it starts)."""
    for _ in range(times):
        throttle.attempt(account, address)


def wait_of(throttle: LoginThrottle, account: str, address: str) -> int | None:
    """The Retry-After of a refused attempt, or None when the attempt may go (it is then counted)."""
    try:
        throttle.attempt(account, address)
    except TooManyAttempts as refused:
        assert refused.status == 429 and refused.code == "too_many_attempts"
        return int(refused.extra["retry_after"])
    return None


def test_each_failure_past_the_free_ones_doubles_the_wait_up_to_the_cap() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 60, clock=clock)
    fail(throttle, ALICE, A, 3)  # the free allowance
    waits = []
    for _ in range(9):
        wait = wait_of(throttle, ALICE, A)
        assert wait is not None
        waits.append(wait)
        clock.now += wait - 0.01
        assert wait_of(throttle, ALICE, A) is not None, "let through before its time"
        clock.now += 0.02
        assert wait_of(throttle, ALICE, A) is None  # a wrong guess again: counted
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_failures_against_alice_from_one_address_never_stop_her_from_another() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 300, clock=clock)
    fail(throttle, ALICE, A, 3)
    for _ in range(10):  # the attacker keeps at it, as often as it is let
        clock.now += 300
        fail(throttle, ALICE, A)
    assert wait_of(throttle, ALICE, A) == 300
    assert wait_of(throttle, ALICE, B) is None  # alice, elsewhere
    throttle.succeeded(ALICE, B)
    assert wait_of(throttle, BOB, A) is None  # the address may still try other accounts a little


def test_a_right_password_forgets_the_pair_but_not_the_address() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, 300, clock=clock)
    fail(throttle, ALICE, A, 2)
    assert wait_of(throttle, ALICE, A) == 1
    clock.now += 1
    throttle.attempt(ALICE, A)
    throttle.succeeded(ALICE, A)
    fail(throttle, ALICE, A, 2)  # a fresh allowance for the pair
    assert wait_of(throttle, ALICE, A) == 1
    # the address's count kept the failures: one's own valid account does not wash them away
    assert throttle._addresses.rows["198.51.100.7"].failures == 4


def test_one_address_trying_many_accounts_is_slowed() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, 300, clock=clock)
    for n in range(ADDRESS_FACTOR * 2):
        assert wait_of(throttle, f"user:u{n}", A) is None
    assert wait_of(throttle, "user:fresh", A) == 1
    assert wait_of(throttle, "user:fresh", B) is None


def test_guessing_from_many_addresses_only_slows_unknown_addresses() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, 300, clock=clock)
    throttle.attempt(ALICE, B)
    throttle.succeeded(ALICE, B)  # alice signs in from B: B is known to her account
    for n in range(ADDRESS_FACTOR * 2):  # a botnet: one guess from each address
        fail(throttle, ALICE, f"203.0.113.{n}")
    # under pressure an unknown address still gets its first attempt at once...
    assert wait_of(throttle, ALICE, "192.0.2.99") is None
    # ...but waits after a failure, where the free allowance would have let it retry
    assert wait_of(throttle, ALICE, "192.0.2.99") == PRESSURE_DELAY
    clock.now += PRESSURE_DELAY
    assert wait_of(throttle, ALICE, "192.0.2.99") is None
    # alice's known address keeps its whole allowance
    fail(throttle, ALICE, B, 2)
    assert wait_of(throttle, ALICE, B) == 1


def test_a_burst_of_parallel_guesses_is_counted_before_any_is_checked() -> None:
    throttle = LoginThrottle(3, 300, clock=Clock())
    # three attempts started (none finished): the fourth is refused, not let through in parallel
    fail(throttle, ALICE, A, 3)
    assert wait_of(throttle, ALICE, A) == 1


def test_an_ipv6_block_counts_as_one_address() -> None:
    throttle = LoginThrottle(2, 300, clock=Clock())
    fail(throttle, ALICE, "2001:db8:1:2::1")
    fail(throttle, ALICE, "2001:db8:1:2::ffff")
    assert wait_of(throttle, ALICE, "2001:db8:1:2:abcd::9") == 1
    assert wait_of(throttle, ALICE, "2001:db8:1:3::1") is None  # another /64


def test_counts_are_forgotten_after_a_quiet_while() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, 60, clock=clock, forget=600)
    fail(throttle, ALICE, A, 2)
    for _ in range(4):
        clock.now += 60
        fail(throttle, ALICE, A)
    assert wait_of(throttle, ALICE, A) == 16
    clock.now += 599
    assert wait_of(throttle, ALICE, A) is None  # not forgotten yet: the pause is simply over
    assert wait_of(throttle, ALICE, A) == 32
    clock.now += 601
    fail(throttle, ALICE, A, 2)
    assert wait_of(throttle, ALICE, A) == 1


# -- the routes -------------------------------------------------------------------------------------
@contextmanager
def client_from(sim: SimCloud, address: str) -> Iterator[TestClient]:
    """A client of the same app whose connections come from ``address`` (outside a ``with``, so
    the running app is not started a second time)."""
    client = TestClient(sim.client.app, client=(address, 40000))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def alice(sim: SimCloud) -> str:
    make_user(sim, "alice")
    return "alice"


def test_an_attacker_failing_against_alice_does_not_stop_her_signing_in(sim: SimCloud, alice: str) -> None:
    wrong = {"username": alice, "password": "not her password"}
    right = {"username": alice, "password": PASSWORD}
    with client_from(sim, A) as attacker, client_from(sim, B) as her:
        for _ in range(sim.cloud.settings.login_attempts):
            assert attacker.post("/api/v1/auth/login", json=wrong).status_code == 401
        blocked = attacker.post("/api/v1/auth/login", json=right)  # even the right one, from A
        assert blocked.status_code == 429 and blocked.json()["code"] == "too_many_attempts"
        assert int(blocked.headers["Retry-After"]) >= 1
        assert her.post("/api/v1/auth/login", json=right).status_code == 200
        session = her.post("/api/v1/auth/session", json=right)  # the dashboard's sign-in too
        assert session.status_code == 200 and session.json()["username"] == alice
        assert attacker.post("/api/v1/auth/session", json=right).status_code == 429


def test_the_password_change_form_is_no_way_around_the_throttle(sim: SimCloud, alice: str) -> None:
    """Someone holding a stolen access token cannot guess the current password at full speed."""
    with client_from(sim, A) as thief:
        pair = thief.post("/api/v1/auth/login", json={"username": alice, "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {pair['access_token']}"}
        guess = {"current_password": "a guess of it", "new_password": "taken over at last"}
        codes = [
            thief.post("/api/v1/auth/password", json=guess, headers=headers).status_code
            for _ in range(sim.cloud.settings.login_attempts + 1)
        ]
    assert codes[:-1] == [401] * sim.cloud.settings.login_attempts and codes[-1] == 429
