"""A job's current state is a fold of its events; this module is that fold."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from domain.events import Event, format_optional_ts, format_ts
from domain.states import EventType, JobState
from domain.values import value_type


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
    next_attempt_at_ms: int | None  #: set while waiting out a retry delay
    version: int  #: number of this job's events applied
    created_seq: int  #: seq of its `enqueued` event: the job's place in enqueue order

    @property
    def attempts_left(self) -> int:
        return 1 + self.max_retries - self.budget_used

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "payload": self.payload,
            "max_retries": self.max_retries,
            "state": self.state.value,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": format_ts(self.created_at_ms),
            "updated_at": format_ts(self.updated_at_ms),
            "next_attempt_at": format_optional_ts(self.next_attempt_at_ms),
        }


def apply(view: JobView | None, event: Event) -> JobView:
    """The view after `event`; checks the event is the next one for this job before using it."""
    if view is None:
        if event.type is not EventType.ENQUEUED or event.version != 1:
            raise ProjectionError(f"job {event.job_id!r} must start with enqueued, got {event.type}")
        return JobView(
            id=event.job_id,
            payload=event.data["payload"],
            max_retries=event.data["max_retries"],
            state=event.to_state,
            attempts=0,
            budget_used=0,
            last_error=None,
            created_at_ms=event.at_ms,
            updated_at_ms=event.at_ms,
            next_attempt_at_ms=None,
            version=1,
            created_seq=event.seq,
        )
    if event.job_id != view.id or event.version != view.version + 1:
        raise ProjectionError(
            f"event {event.type} v{event.version} for {event.job_id!r} does not follow "
            f"{view.id!r} v{view.version}"
        )
    if event.from_state is not view.state:
        raise ProjectionError(f"event {event.type} leaves {event.from_state}, job is {view.state}")
    attempts, budget_used = view.attempts, view.budget_used
    last_error, next_attempt_at_ms = view.last_error, None
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
            budget_used = 0
        case EventType.INTERRUPTED:
            # A cut-off attempt is not the job's fault: it does not use up budget.
            budget_used -= 1
        case EventType.SUCCEEDED:
            pass
        case _:
            raise ProjectionError(f"job {view.id!r} already exists; got {event.type}")
    return JobView(
        id=view.id,
        payload=view.payload,
        max_retries=view.max_retries,
        state=event.to_state,
        attempts=attempts,
        budget_used=budget_used,
        last_error=last_error,
        created_at_ms=view.created_at_ms,
        updated_at_ms=event.at_ms,
        next_attempt_at_ms=next_attempt_at_ms,
        version=event.version,
        created_seq=view.created_seq,
    )


def project(events: Iterable[Event]) -> dict[str, JobView]:
    """Replay a log (in seq order) into the views of every job in it."""
    views: dict[str, JobView] = {}
    for event in events:
        views[event.job_id] = apply(views.get(event.job_id), event)
    return views
