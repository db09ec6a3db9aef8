"""The instance state machine: which action may start from which state."""

from __future__ import annotations

import itertools

import pytest

from cloudlet.drivers.base import PowerState
from cloudlet.errors import Conflict, InvalidState
from cloudlet.services.lifecycle import FROM_POWER, TRANSITIONAL, State, check_action

# Written out by hand from the documented state machine, not copied from lifecycle.ALLOWED.
ALLOWED = {
    ("start", "stopped"),
    ("start", "error"),
    ("stop", "running"),
    ("force-stop", "running"),
    ("force-stop", "paused"),
    ("force-stop", "stopping"),
    ("force-stop", "error"),
    ("reboot", "running"),
    ("delete", "running"),
    ("delete", "stopped"),
    ("delete", "paused"),
    ("delete", "error"),
}
ACTIONS = ["start", "stop", "force-stop", "reboot", "delete"]
STATES = ["pending", "provisioning", "running", "stopping", "stopped", "paused", "error", "deleting"]
PAIRS = list(itertools.product(ACTIONS, STATES))


def test_the_states_are_the_documented_ones() -> None:
    assert sorted(s.value for s in State) == sorted(STATES)


@pytest.mark.parametrize(
    ("action", "state"), sorted(ALLOWED), ids=[f"{a}-from-{s}" for a, s in sorted(ALLOWED)]
)
def test_allowed_action_passes(action: str, state: str) -> None:
    check_action(action, state)


REFUSED = [p for p in PAIRS if p not in ALLOWED]


@pytest.mark.parametrize(("action", "state"), REFUSED, ids=[f"{a}-from-{s}" for a, s in REFUSED])
def test_refused_action_raises_409_naming_action_and_state(action: str, state: str) -> None:
    with pytest.raises(InvalidState) as info:
        check_action(action, state)
    err = info.value
    assert isinstance(err, Conflict)
    assert (err.status, err.code) == (409, "invalid_state")
    assert err.extra == {"action": action, "state": state}
    assert f"cannot {action} an instance that is {state}" in err.detail
    allowed_from = sorted(s for a, s in ALLOWED if a == action)
    assert f"(allowed from: {', '.join(allowed_from)})" in err.detail


@pytest.mark.parametrize("state", ["pending", "provisioning", "deleting"])
def test_nothing_may_start_while_an_instance_is_created_or_deleted(state: str) -> None:
    for action in ACTIONS:
        with pytest.raises(InvalidState):
            check_action(action, state)


def test_transitional_states() -> None:
    assert {s.value for s in TRANSITIONAL} == {"pending", "provisioning", "stopping", "deleting"}


@pytest.mark.parametrize(
    ("power", "state"),
    [
        (PowerState.RUNNING, "running"),
        (PowerState.STOPPED, "stopped"),
        (PowerState.PAUSED, "paused"),
        (PowerState.SHUTTING_DOWN, "running"),
        (PowerState.CRASHED, "error"),
        (PowerState.MISSING, "error"),
    ],
)
def test_backend_power_states_map_to_settled_states(power: PowerState, state: str) -> None:
    assert FROM_POWER[power] == state
    assert FROM_POWER[power] not in TRANSITIONAL


def test_unknown_power_state_changes_nothing() -> None:
    assert PowerState.UNKNOWN not in FROM_POWER
