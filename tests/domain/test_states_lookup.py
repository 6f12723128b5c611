"""The lookup table next_state() uses must be the machine's own answer for every move."""

from __future__ import annotations

import itertools

import pytest
from transitions import Machine

from domain.states import MACHINE_CONFIG, EventType, JobState, MachineError, next_state


class _Model:
    def __init__(self, state: str) -> None:
        self.state = state


def _machine_says(state: JobState, trigger: EventType) -> JobState | None:
    machine = Machine(model=None, **MACHINE_CONFIG)  # a fresh machine, not the module's
    if trigger.value not in machine.events:
        return None
    model = _Model(state.value)
    try:
        machine.events[trigger.value].trigger(model)
    except MachineError:
        return None
    return JobState(model.state)


@pytest.mark.parametrize(("state", "trigger"), list(itertools.product(JobState, EventType)))
def test_next_state_agrees_with_the_machine(state: JobState, trigger: EventType) -> None:
    expected = _machine_says(state, trigger)
    if expected is None:
        with pytest.raises(MachineError):
            next_state(state, trigger)
    else:
        assert next_state(state, trigger) is expected
        assert next_state(state.value, trigger) is expected  # plain strings work too
