"""Replaying the log rebuilds exactly the live views, after every kind of event.

The live view is what a store keeps as it appends; the replay is `project(log)`. They
must agree after each event, and also when the log went through JSON first (what a
durable store reads back: event data is stored as JSON text).
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

from domain import job
from domain.events import Event
from domain.projection import project
from domain.states import EventType, JobState
from tests.domain.script import T0, Script

HOUR_MS = 3_600_000


def through_json(events: list[Event]) -> list[Event]:
    return [replace(e, data=json.loads(json.dumps(dict(e.data)))) for e in events]


def test_replay_equals_the_live_views_after_every_event_of_every_kind() -> None:
    rng = random.Random(7)
    scripts = [
        Script(
            job_id=f"j{i}",
            max_retries=i % 3,
            seq=i * 1000,
            priority=rng.randint(-100, 100),
            timeout_ms=rng.choice([None, 0, 500]),
            run_at_ms=rng.choice([None, T0 - 5, T0 + HOUR_MS]),
        )
        for i in range(40)
    ]
    log = [s.events[0] for s in scripts]  # in the order the events were recorded
    seen: set[EventType] = {EventType.ENQUEUED}
    for step in range(14):
        for s in scripts:
            state, choice = s.view.state, rng.random()
            if state is JobState.QUEUED:
                event = s.do(job.cancel) if choice < 0.15 else s.do(job.start)
            elif state is JobState.RUNNING:
                if choice < 0.4:
                    event = s.do(
                        job.succeed, duration_ms=1, result=rng.choice([None, {"n": step}, ["x", 1.5]])
                    )
                elif choice < 0.75:
                    event = s.fail(r=rng.random(), reason=rng.choice(["error", "timeout"]))
                elif choice < 0.9:
                    event = s.do(job.interrupt, reason="shutdown")
                else:
                    event = s.do(job.cancel, duration_ms=rng.randint(0, 100))
            elif state in (JobState.FAILED, JobState.CANCELLED):
                event = s.do(job.requeue)
            else:
                continue
            seen.add(event.type)
            log.append(event)
            live = {x.view.id: x.view for x in scripts}
            assert project(log) == live, event
            assert project(through_json(log)) == live, event
    assert seen == set(EventType)
    kinds = {(e.type, e.from_state) for s in scripts for e in s.events}
    assert {(EventType.CANCELLED, JobState.QUEUED), (EventType.CANCELLED, JobState.RUNNING)} <= kinds
    assert (EventType.REQUEUED, JobState.CANCELLED) in kinds


def test_a_log_written_before_job_control_replays_with_the_defaults() -> None:
    old = [
        Event(
            EventType.ENQUEUED,
            "old",
            T0,
            None,
            JobState.QUEUED,
            None,
            1,
            {"payload": "p", "max_retries": 0},
            1,
        ),
        Event(EventType.STARTED, "old", T0 + 1, JobState.QUEUED, JobState.RUNNING, 1, 2, {"waited_ms": 1}, 2),
        Event(
            EventType.SUCCEEDED, "old", T0 + 2, JobState.RUNNING, JobState.DONE, 1, 3, {"duration_ms": 1}, 3
        ),
    ]
    view = project(old)["old"]
    assert (view.priority, view.timeout_ms, view.result, view.state) == (0, None, None, JobState.DONE)
