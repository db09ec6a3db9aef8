"""The instance state machine, written down.

    pending ──create──▶ provisioning ──▶ running ◀──start── stopped
                              │             │  ▲               ▲
                              ▼             │  └─reboot─┘      │
                    (rolled back, gone)     └──stop──▶ stopping ┘
    any settled state ──delete──▶ deleting ──▶ (gone)
    error: the backend failed or lost the instance; start, force-stop and delete are allowed.
    paused: the instance is frozen (pause); resume thaws it; it can be stopped (forced) or deleted.
    restart stops and starts again (a VM reboots); kill signals a container's process (a VM: force-stop).

The reconciler may move settled states (running, stopped, paused, error) to follow the backend;
transitional states (pending, provisioning, stopping, deleting) belong to the operation in flight.
"""

from __future__ import annotations

import enum

from cloudlet.drivers.base import PowerState
from cloudlet.errors import InvalidState


class State(enum.StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    PAUSED = "paused"
    ERROR = "error"
    DELETING = "deleting"


TRANSITIONAL = frozenset({State.PENDING, State.PROVISIONING, State.STOPPING, State.DELETING})

# action -> states it may start from
ALLOWED: dict[str, frozenset[State]] = {
    "start": frozenset({State.STOPPED, State.ERROR}),
    "stop": frozenset({State.RUNNING}),
    "force-stop": frozenset({State.RUNNING, State.PAUSED, State.STOPPING, State.ERROR}),
    "reboot": frozenset({State.RUNNING}),
    "restart": frozenset({State.RUNNING, State.STOPPED, State.ERROR}),
    "kill": frozenset({State.RUNNING, State.PAUSED}),
    "pause": frozenset({State.RUNNING}),
    "resume": frozenset({State.PAUSED}),
    "delete": frozenset({State.RUNNING, State.STOPPED, State.PAUSED, State.ERROR}),
}

# What a backend power state means for a settled instance.
FROM_POWER: dict[PowerState, State] = {
    PowerState.RUNNING: State.RUNNING,
    PowerState.STOPPED: State.STOPPED,
    PowerState.PAUSED: State.PAUSED,
    PowerState.SHUTTING_DOWN: State.RUNNING,
    PowerState.CRASHED: State.ERROR,
    PowerState.MISSING: State.ERROR,
}


def check_action(action: str, state: str) -> None:
    """Raise a 409 naming the action and the state when the action is not allowed now."""
    if State(state) not in ALLOWED[action]:
        allowed = ", ".join(sorted(ALLOWED[action]))
        raise InvalidState(
            f"cannot {action} an instance that is {state} (allowed from: {allowed})",
            action=action,
            state=state,
        )
