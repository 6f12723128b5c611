"""The job lifecycle: the one definition of which moves are legal.

Triggers are named after the event each move records, so the machine, the event
log and the docs share one vocabulary. Every other module asks this machine.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from transitions import Machine, MachineError


class JobState(StrEnum):
    QUEUED = "queued"  #: waiting for a worker (ready now, or after a retry delay)
    RUNNING = "running"  #: a worker is running an attempt
    DONE = "done"  #: an attempt succeeded
    FAILED = "failed"  #: the last attempt of its budget failed
    CANCELLED = "cancelled"  #: cancelled by POST /jobs/{id}/cancel before an attempt succeeded


class EventType(StrEnum):
    ENQUEUED = "enqueued"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"
    REQUEUED = "requeued"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"


INITIAL_STATE = JobState.QUEUED
FINISHED_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})

# (trigger, source, dest), exactly SPEC.md's table. `enqueued` creates a job and
# so has no source state: it is the machine's initial state, not a transition.
TRANSITIONS: tuple[tuple[EventType, JobState, JobState], ...] = (
    (EventType.STARTED, JobState.QUEUED, JobState.RUNNING),
    (EventType.SUCCEEDED, JobState.RUNNING, JobState.DONE),
    (EventType.RETRY_SCHEDULED, JobState.RUNNING, JobState.QUEUED),
    (EventType.FAILED, JobState.RUNNING, JobState.FAILED),
    (EventType.REQUEUED, JobState.FAILED, JobState.QUEUED),
    (EventType.REQUEUED, JobState.CANCELLED, JobState.QUEUED),
    (EventType.INTERRUPTED, JobState.RUNNING, JobState.QUEUED),
    (EventType.CANCELLED, JobState.QUEUED, JobState.CANCELLED),
    (EventType.CANCELLED, JobState.RUNNING, JobState.CANCELLED),
)

#: The events that end a running attempt (their source is `running`): the outcomes
#: metrics time and the pool records, read off the table rather than listed again.
ATTEMPT_OUTCOMES = frozenset(trigger for trigger, source, _ in TRANSITIONS if source is JobState.RUNNING)

MACHINE_CONFIG: dict[str, Any] = {
    "states": [s.value for s in JobState],
    "transitions": [{"trigger": t.value, "source": s.value, "dest": d.value} for t, s, d in TRANSITIONS],
    "initial": INITIAL_STATE.value,
    "auto_transitions": False,
}

# One shared machine drives plain objects (no add_model): ~7 µs a transition and
# no per-job machine; see shared/notes/sanic-transitions.md §9.
_MACHINE = Machine(model=None, **MACHINE_CONFIG)


class _Probe:
    """The minimal model the shared machine moves: just a `state` attribute."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


def _ask_machine(state: str, trigger: str) -> JobState | None:
    """Where the machine takes `trigger` from `state`, or None if it refuses."""
    if trigger not in _MACHINE.events:
        return None  # `enqueued` creates a job: it is no move of an existing one
    probe = _Probe(state)
    try:
        _MACHINE.events[trigger].trigger(probe)
    except MachineError:
        return None
    return JobState(probe.state)


# Every legal move, read off the machine once at import. A trigger call costs
# ~8 µs (two per job, the largest single cost of the no-op engine benchmark;
# docs/PERFORMANCE.md); a dict lookup costs ~0.1 µs. The machine stays the
# only definition: this table is its answer to every (state, trigger) pair,
# and tests/domain/test_states_lookup.py proves the two agree.
_NEXT_STATE: dict[tuple[str, str], JobState] = {
    (state.value, trigger.value): dest
    for state in JobState
    for trigger in EventType
    if (dest := _ask_machine(state.value, trigger.value)) is not None
}


def next_state(state: str, trigger: EventType) -> JobState:
    """Where `trigger` leads from `state` by the machine's rules; raise MachineError if nowhere."""
    dest = _NEXT_STATE.get((state, trigger))  # StrEnum members hash and compare as their str
    if dest is None:
        raise MachineError(f"Can't trigger event {trigger} from state {state}!")
    return dest


def allowed_triggers(state: str) -> list[EventType]:
    return [EventType(t) for t in _MACHINE.get_triggers(str(state))]


__all__ = [
    "ATTEMPT_OUTCOMES",
    "FINISHED_STATES",
    "INITIAL_STATE",
    "MACHINE_CONFIG",
    "TRANSITIONS",
    "EventType",
    "JobState",
    "MachineError",
    "allowed_triggers",
    "next_state",
]
