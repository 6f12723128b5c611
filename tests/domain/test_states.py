"""The machine is the only definition of legal moves: every pair is checked against it."""

from __future__ import annotations

import itertools

import pytest

from domain.states import (
    ATTEMPT_OUTCOMES,
    FINISHED_STATES,
    TRANSITIONS,
    EventType,
    JobState,
    MachineError,
    allowed_triggers,
    next_state,
)

ALLOWED = {(trigger, source): dest for trigger, source, dest in TRANSITIONS}
TRIGGERS = [t for t in EventType if t is not EventType.ENQUEUED]


def test_the_transition_table_is_specs_table() -> None:
    assert {(t.value, s.value, d.value) for t, s, d in TRANSITIONS} == {
        ("started", "queued", "running"),
        ("succeeded", "running", "done"),
        ("retry_scheduled", "running", "queued"),
        ("failed", "running", "failed"),
        ("requeued", "failed", "queued"),
        ("requeued", "cancelled", "queued"),
        ("interrupted", "running", "queued"),
        ("cancelled", "queued", "cancelled"),
        ("cancelled", "running", "cancelled"),
    }


def test_done_failed_and_cancelled_are_finished_and_only_a_requeue_leaves_them() -> None:
    assert {s.value for s in FINISHED_STATES} == {"done", "failed", "cancelled"}
    for state in FINISHED_STATES:
        assert set(allowed_triggers(state)) <= {EventType.REQUEUED}
    assert allowed_triggers(JobState.DONE) == []  # a success is final


def test_the_attempt_outcomes_are_the_moves_out_of_running() -> None:
    assert {t.value for t in ATTEMPT_OUTCOMES} == {
        "succeeded",
        "retry_scheduled",
        "failed",
        "interrupted",
        "cancelled",
    }


@pytest.mark.parametrize(("trigger", "source"), list(ALLOWED))
def test_every_allowed_transition_reaches_its_destination(trigger: EventType, source: JobState) -> None:
    assert next_state(source, trigger) is ALLOWED[(trigger, source)]


@pytest.mark.parametrize(
    ("trigger", "source"),
    [(t, s) for t, s in itertools.product(TRIGGERS, JobState) if (t, s) not in ALLOWED],
)
def test_every_other_transition_is_refused_by_the_machine(trigger: EventType, source: JobState) -> None:
    with pytest.raises(MachineError):
        next_state(source, trigger)


@pytest.mark.parametrize("state", list(JobState))
def test_allowed_triggers_match_the_table(state: JobState) -> None:
    assert set(allowed_triggers(state)) == {t for (t, s) in ALLOWED if s is state}


def test_enqueued_is_not_a_transition_of_an_existing_job() -> None:
    for state in JobState:
        with pytest.raises((MachineError, AttributeError, KeyError)):
            next_state(state, EventType.ENQUEUED)
