"""A job's current state is a fold of its events; this module is that fold."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from domain.events import Event, format_optional_ts, format_ts, parse_optional_ts
from domain.states import EventType, JobState
from domain.values import value_type

# Python 3.11 resolves an enum member named on its class (`JobState.QUEUED`) through a
# descriptor, ~0.2 µs a lookup; hot paths compare against these module names (Issue 12).
_ENQUEUED = EventType.ENQUEUED


class ProjectionError(Exception):
    """An event does not follow from the view it is applied to (a corrupt or reordered log)."""


@value_type
class JobView:
    id: str
    payload: str
    max_retries: int
    state: JobState
    attempts: int  #: attempts started over the job's whole life
    budget_used: int  #: attempts counted against the current budget of 1 + max_retries
    last_error: str | None
    created_at_ms: int
    updated_at_ms: int
    next_attempt_at_ms: int | None  #: set while waiting out a retry delay or a schedule (run_at)
    version: int  #: number of this job's events applied
    created_seq: int  #: seq of its `enqueued` event: the job's place in enqueue order
    # Appended with defaults, so positional construction of the fields above still works.
    priority: int = 0  #: higher starts first among ready jobs (-100..100)
    timeout_ms: int | None = None  #: this job's attempt timeout; None: ATTEMPT_TIMEOUT_MS applies
    result: Any = None  #: the JSON value its `succeeded` carried; None until then

    def with_created_seq(self, seq: int) -> JobView:
        """This view with its `enqueued` numbered `seq` (a store numbers a batch's events at commit).

        Positional on purpose, like `Event.with_seq`: `dataclasses.replace` was ~10% of a
        batch's commit on the SQL stores in the profile (docs/PERFORMANCE.md, Issue 12)."""
        return JobView(
            self.id,
            self.payload,
            self.max_retries,
            self.state,
            self.attempts,
            self.budget_used,
            self.last_error,
            self.created_at_ms,
            self.updated_at_ms,
            self.next_attempt_at_ms,
            self.version,
            seq,
            self.priority,
            self.timeout_ms,
            self.result,
        )

    @property
    def attempts_left(self) -> int:
        return 1 + self.max_retries - self.budget_used

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "payload": self.payload,
            "max_retries": self.max_retries,
            "priority": self.priority,
            "timeout_ms": self.timeout_ms,
            "state": self.state.value,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "result": self.result,
            "created_at": format_ts(self.created_at_ms),
            "updated_at": format_ts(self.updated_at_ms),
            "next_attempt_at": format_optional_ts(self.next_attempt_at_ms),
        }


def apply(view: JobView | None, event: Event) -> JobView:
    """The view after `event`; checks the event is the next one for this job before using it."""
    if view is None:
        if event.type is not _ENQUEUED or event.version != 1:
            raise ProjectionError(f"job {event.job_id!r} must start with enqueued, got {event.type}")
        data = event.data
        # .get: `enqueued` events logged before priority, timeout_ms and run_at existed
        # replay as what an omitted field means today.
        run_at_ms = parse_optional_ts(data.get("run_at"))
        # Positional, in JobView's field order, here and below: a class called with
        # keywords gets them as a dict, ~2.0 µs against 0.6 µs for these 15 fields, and
        # this runs for every event (docs/PERFORMANCE.md, Issue 12).
        return JobView(
            event.job_id,  # id
            data["payload"],  # payload
            data["max_retries"],  # max_retries
            event.to_state,  # state
            0,  # attempts
            0,  # budget_used
            None,  # last_error
            event.at_ms,  # created_at_ms
            event.at_ms,  # updated_at_ms
            # A run_at at or before the enqueue is "now": ready at once, like no run_at.
            run_at_ms if run_at_ms is not None and run_at_ms > event.at_ms else None,  # next_attempt_at_ms
            1,  # version
            event.seq,  # created_seq
            data.get("priority", 0),  # priority
            data.get("timeout_ms"),  # timeout_ms
        )
    if event.job_id != view.id or event.version != view.version + 1:
        raise ProjectionError(
            f"event {event.type} v{event.version} for {event.job_id!r} does not follow "
            f"{view.id!r} v{view.version}"
        )
    if event.from_state is not view.state:
        raise ProjectionError(f"event {event.type} leaves {event.from_state}, job is {view.state}")
    attempts, budget_used = view.attempts, view.budget_used
    last_error, next_attempt_at_ms, result = view.last_error, None, view.result
    match event.type:
        case EventType.STARTED:
            attempts += 1
            budget_used += 1
        case EventType.RETRY_SCHEDULED:
            last_error = event.data["error"]
            next_attempt_at_ms = event.at_ms + event.data["delay_ms"]
        case EventType.FAILED:
            last_error = event.data["error"]
        case EventType.REQUEUED:
            # A fresh run: a full budget, ready now. (Only failed and cancelled jobs are
            # requeued, and neither has a result: done is final.)
            budget_used = 0
            result = None
        case EventType.INTERRUPTED:
            # A cut-off attempt is not the job's fault: it does not use up budget.
            budget_used -= 1
        case EventType.SUCCEEDED:
            result = event.data.get("result")  # .get: logged before results existed
        case EventType.CANCELLED:
            # Someone chose to stop it: a cancelled running attempt ran, so it stays
            # counted against the budget (a requeue starts a fresh one anyway).
            pass
        case _:
            raise ProjectionError(f"job {view.id!r} already exists; got {event.type}")
    return JobView(
        view.id,  # id
        view.payload,  # payload
        view.max_retries,  # max_retries
        event.to_state,  # state
        attempts,  # attempts
        budget_used,  # budget_used
        last_error,  # last_error
        view.created_at_ms,  # created_at_ms
        event.at_ms,  # updated_at_ms
        next_attempt_at_ms,  # next_attempt_at_ms
        event.version,  # version
        view.created_seq,  # created_seq
        view.priority,  # priority
        view.timeout_ms,  # timeout_ms
        result,  # result
    )


def project(events: Iterable[Event]) -> dict[str, JobView]:
    """Replay a log (in seq order) into the views of every job in it."""
    views: dict[str, JobView] = {}
    for event in events:
        views[event.job_id] = apply(views.get(event.job_id), event)
    return views
