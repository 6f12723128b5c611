"""Any sequence of commands and outcomes keeps replay equal to the live projection, and every
command the machine refuses writes nothing (hypothesis stateful testing, issue 10).

Which moves exist is read off the one machine (domain.states): the rule below draws any
trigger the machine knows and any job, legal or not, and the machine's own answer says
whether the command must succeed or be refused. COMMANDS says how to *issue* each trigger
(the commands take different arguments); a trigger added to the machine without a command
here fails `test_every_trigger_of_the_machine_has_a_command`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from domain import job
from domain.backoff import Backoff
from domain.errors import InvalidTransition
from domain.events import Event
from domain.projection import JobView, apply, project
from domain.states import INITIAL_STATE, MACHINE_CONFIG, EventType, JobState, MachineError, next_state

POLICY = Backoff(base_ms=5, max_ms=100)
T0 = 1_764_381_679_000
IDS = ["a", "b", "c"]


@dataclass(frozen=True)
class Outcome:
    """What the world decides besides the command: an error text, the jitter, a reason."""

    error: str = "boom"
    seed: int = 0
    reason: str = "shutdown"
    duration_ms: int = 3
    result: Any = None


OUTCOMES = st.builds(
    Outcome,
    error=st.text(max_size=20),
    seed=st.integers(0, 2**32),
    reason=st.sampled_from(["shutdown", "lease_expired", "restart"]),
    duration_ms=st.integers(0, 10_000),
    result=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
        max_leaves=5,
    ),
)

#: trigger -> how to issue it: (view, clock ms, outcome) -> the event, or InvalidTransition.
Command = Callable[[JobView, int, Outcome], Event]


def _fail(view: JobView, at_ms: int, o: Outcome) -> Event:
    rng = random.Random(o.seed)
    return job.fail(view, error=o.error, at_ms=at_ms, duration_ms=o.duration_ms, policy=POLICY, rng=rng)


COMMANDS: dict[EventType, Command] = {
    EventType.STARTED: lambda view, at_ms, o: job.start(view, at_ms=at_ms),
    EventType.SUCCEEDED: lambda view, at_ms, o: job.succeed(
        view, at_ms=at_ms, duration_ms=o.duration_ms, result=o.result
    ),
    # `fail` records retry_scheduled while the budget lasts, failed after: one command, two triggers.
    EventType.RETRY_SCHEDULED: _fail,
    EventType.FAILED: _fail,
    EventType.REQUEUED: lambda view, at_ms, o: job.requeue(view, at_ms=at_ms),
    EventType.INTERRUPTED: lambda view, at_ms, o: job.interrupt(
        view, at_ms=at_ms, reason=o.reason, duration_ms=o.duration_ms
    ),
    EventType.CANCELLED: lambda view, at_ms, o: job.cancel(view, at_ms=at_ms, duration_ms=o.duration_ms),
}

#: Every trigger of the machine, read from its definition.
MACHINE_TRIGGERS = sorted({EventType(t["trigger"]) for t in MACHINE_CONFIG["transitions"]})


def test_every_trigger_of_the_machine_has_a_command() -> None:
    assert set(MACHINE_TRIGGERS) == set(COMMANDS)


def _expected_type(view: JobView, trigger: EventType) -> EventType:
    """The event a command issued for `trigger` records, if the machine allows it."""
    if COMMANDS[trigger] is _fail:
        return EventType.FAILED if view.attempts_left <= 0 else EventType.RETRY_SCHEDULED
    return trigger


def _allowed(state: JobState, trigger: EventType) -> JobState | None:
    try:
        return next_state(state, trigger)
    except MachineError:
        return None


class JobLifecycle(RuleBasedStateMachine):
    """A log and its live projection, driven by arbitrary commands."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[Event] = []
        self.live: dict[str, JobView] = {}
        self.clock = T0
        self.refused = 0

    def _tick(self, data: st.DataObject) -> int:
        self.clock += data.draw(st.integers(0, 50), label="ms later")
        return self.clock

    def _write(self, event: Event) -> None:
        committed = event.with_seq(len(self.log) + 1)
        self.log.append(committed)
        self.live[event.job_id] = apply(self.live.get(event.job_id), committed)

    @initialize()
    def start_with_one_job(self) -> None:
        self._write(job.enqueue("a", "", 1, at_ms=self.clock))

    @precondition(lambda self: len(self.live) < len(IDS))
    @rule(
        data=st.data(),
        payload=st.text(max_size=10),
        max_retries=st.integers(0, 3),
        priority=st.integers(-100, 100),
        timeout_ms=st.none() | st.integers(0, 1000),
        delay_ms=st.none() | st.integers(-50, 100),
    )
    def enqueue(
        self,
        data: st.DataObject,
        payload: str,
        max_retries: int,
        priority: int,
        timeout_ms: int | None,
        delay_ms: int | None,
    ) -> None:
        job_id = next(i for i in IDS if i not in self.live)
        at_ms = self._tick(data)
        run_at_ms = None if delay_ms is None else at_ms + delay_ms
        event = job.enqueue(
            job_id,
            payload,
            max_retries,
            at_ms=at_ms,
            priority=priority,
            timeout_ms=timeout_ms,
            run_at_ms=run_at_ms,
        )
        assert (event.to_state, event.version) == (INITIAL_STATE, 1)
        self._write(event)

    @rule(data=st.data(), trigger=st.sampled_from(MACHINE_TRIGGERS), outcome=OUTCOMES)
    def command(self, data: st.DataObject, trigger: EventType, outcome: Outcome) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.live)), label="job")
        view = self.live[job_id]
        expected = _expected_type(view, trigger)
        dest = _allowed(view.state, expected)
        log_before, view_before = list(self.log), view
        try:
            event = COMMANDS[trigger](view, self._tick(data), outcome)
        except InvalidTransition as refusal:
            assert dest is None, f"the machine allows {expected} from {view.state}, the command refused it"
            assert (refusal.job_id, refusal.state) == (job_id, view.state.value)
            assert self.log == log_before and self.live[job_id] is view_before  # nothing written
            self.refused += 1
            return
        assert dest is not None, f"the machine refuses {expected} from {view.state}, the command issued it"
        assert (event.type, event.from_state, event.to_state) == (expected, view.state, dest)
        assert (event.job_id, event.version) == (job_id, view.version + 1)
        self._write(event)

    @invariant()
    def replay_equals_the_live_projection(self) -> None:
        assert project(self.log) == self.live

    @invariant()
    def every_view_is_consistent_with_its_log(self) -> None:
        for job_id, view in self.live.items():
            events = [e for e in self.log if e.job_id == job_id]
            assert view.version == len(events)
            assert view.state is events[-1].to_state
            assert 0 <= view.budget_used <= 1 + view.max_retries
            assert view.attempts == sum(e.type is EventType.STARTED for e in events)
            assert view.attempts >= view.budget_used
            started = [e.attempt for e in events if e.type is EventType.STARTED]
            assert started == list(range(1, len(started) + 1))
            # The view's fields, recomputed from its events without `apply` (an independent model).
            requeues = [i for i, e in enumerate(events) if e.type is EventType.REQUEUED]
            budget = events[requeues[-1] + 1 :] if requeues else events
            used = sum(e.type is EventType.STARTED for e in budget)
            used -= sum(e.type is EventType.INTERRUPTED for e in budget)
            assert view.budget_used == used
            failures = [e for e in events if e.type in (EventType.RETRY_SCHEDULED, EventType.FAILED)]
            assert view.last_error == (failures[-1].data["error"] if failures else None)
            last = events[-1]
            due = None
            if last.type is EventType.RETRY_SCHEDULED:
                due = last.at_ms + last.data["delay_ms"]
            elif last.type is EventType.ENQUEUED and view.next_attempt_at_ms is not None:
                assert view.next_attempt_at_ms > last.at_ms  # a schedule in the future
                due = view.next_attempt_at_ms
            assert view.next_attempt_at_ms == due
            assert view.result == (last.data["result"] if last.type is EventType.SUCCEEDED else None)
            first = events[0].data
            assert (view.priority, view.timeout_ms) == (first["priority"], first["timeout_ms"])
            for e in events:
                if e.type in (EventType.RETRY_SCHEDULED, EventType.FAILED):
                    assert e.data["reason"] == "error"

    def teardown(self) -> None:
        seqs = [e.seq for e in self.log]
        assert seqs == list(range(1, len(self.log) + 1))


JobLifecycle.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_any_sequence_of_commands_keeps_replay_equal_to_the_live_projection = JobLifecycle.TestCase


def test_the_commands_reach_every_transition_of_the_machine() -> None:
    """Every (source, trigger) of the machine is reachable with these commands from a new
    job (a search over them), so the stateful run above can exercise each one."""
    reached: set[tuple[str, str]] = set()
    seen: set[tuple[JobState, int, int]] = set()
    views = [apply(None, job.enqueue("a", "", 1, at_ms=T0).with_seq(1))]
    while views:
        view = views.pop()
        key = (view.state, view.budget_used, view.attempts)
        if key in seen or view.attempts > 4:
            continue
        seen.add(key)
        for trigger in MACHINE_TRIGGERS:
            expected = _expected_type(view, trigger)
            if _allowed(view.state, expected) is None:
                continue
            reached.add((view.state.value, expected.value))
            views.append(apply(view, COMMANDS[trigger](view, T0, Outcome()).with_seq(view.version + 1)))
    machine = {(t["source"], t["trigger"]) for t in MACHINE_CONFIG["transitions"]}
    assert machine <= reached
