"""How events and job views map to table rows, shared by the SQL stores.

The jobs table holds the projection (one row per job, the `JobView` columns
plus `ready_at_ms`, the moment a queued job may start: the queue's order).
Event data is stored as compact JSON text, written once per event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from domain.events import Event
from domain.projection import JobView
from domain.states import EventType, JobState

#: Column order of `view_row` / `view_from_row`; both SQL schemas name them so.
JOB_COLUMNS = (
    "id",
    "payload",
    "max_retries",
    "state",
    "attempts",
    "budget_used",
    "last_error",
    "created_at_ms",
    "updated_at_ms",
    "next_attempt_at_ms",
    "version",
    "created_seq",
    "ready_at_ms",
)
EVENT_COLUMNS = ("seq", "job_id", "version", "type", "at_ms", "from_state", "to_state", "attempt", "data")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def ready_at_ms(view: JobView) -> int | None:
    """When a queued job may start (None unless queued): the queue is ordered by it."""
    if view.state is not JobState.QUEUED:
        return None
    return view.next_attempt_at_ms if view.next_attempt_at_ms is not None else view.updated_at_ms


def view_row(view: JobView) -> tuple[Any, ...]:
    return (
        view.id,
        view.payload,
        view.max_retries,
        view.state.value,
        view.attempts,
        view.budget_used,
        view.last_error,
        view.created_at_ms,
        view.updated_at_ms,
        view.next_attempt_at_ms,
        view.version,
        view.created_seq,
        ready_at_ms(view),
    )


def view_from_row(row: Sequence[Any]) -> JobView:
    return JobView(
        id=row[0],
        payload=row[1],
        max_retries=row[2],
        state=JobState(row[3]),
        attempts=row[4],
        budget_used=row[5],
        last_error=row[6],
        created_at_ms=row[7],
        updated_at_ms=row[8],
        next_attempt_at_ms=row[9],
        version=row[10],
        created_seq=row[11],
    )


def event_row(event: Event) -> tuple[Any, ...]:
    return (
        event.seq,
        event.job_id,
        event.version,
        event.type.value,
        event.at_ms,
        event.from_state.value if event.from_state is not None else None,
        event.to_state.value,
        event.attempt,
        _dumps(dict(event.data)),
    )


def event_from_row(row: Sequence[Any]) -> Event:
    return Event(
        seq=row[0],
        job_id=row[1],
        version=row[2],
        type=EventType(row[3]),
        at_ms=row[4],
        from_state=JobState(row[5]) if row[5] is not None else None,
        to_state=JobState(row[6]),
        attempt=row[7],
        data=json.loads(row[8]),
    )
