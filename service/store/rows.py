"""How events and job views map to table rows, shared by the SQL drivers.

The jobs table holds the projection (one row per job: the `JobView` columns
plus `ready_at_ms`, the moment a queued job may start, which orders the
queue). Event data is stored as compact JSON text, written once per event.
The column order below is the one every query in service/store/sql/ names.

Free text (a payload, an error) may hold U+0000, which JSON allows and
PostgreSQL's `text` cannot store: a driver whose text type refuses NUL keeps
those columns as JSON string literals (`Rows(json_text=True)`); event data is
JSON already, and JSON escapes NUL.

A driver may keep the payload in the job's `enqueued` event only (PostgreSQL,
schema 5: every row version of a job would copy it again); its rows then carry
`state_row` (no payload) and its reads return that event's data in the payload
column, which `Rows(json_text=True)` reads the payload out of.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from domain.events import Event
from domain.projection import JobView
from domain.states import EventType, JobState
from service.store.core import ready_at_ms

#: kasp_jobs' columns in the order of `Rows.view_row` (the sql/*.sql files list them so).
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
    "priority",
    "timeout_ms",
    "result",
)
EVENT_COLUMNS = ("seq", "job_id", "version", "type", "at_ms", "from_state", "to_state", "attempt", "data")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_STATE = {s.value: s for s in JobState}
_TYPE = {t.value: t for t in EventType}


def _same(text: str) -> str:
    return text


def _payload_of(text: str) -> str:
    """A payload stored as a JSON string literal, or read out of its enqueued event's data."""
    value = json.loads(text)
    return value["payload"] if isinstance(value, dict) else value  # type: ignore[no-any-return]


class Rows:
    """Row conversion for one driver; `json_text` stores free text as JSON string literals."""

    def __init__(self, *, json_text: bool) -> None:
        self._encode: Callable[[str], str] = _dumps if json_text else _same
        self._decode: Callable[[str], str] = json.loads if json_text else _same
        self._payload: Callable[[str], str] = _payload_of if json_text else _same

    def view_row(self, view: JobView) -> tuple[Any, ...]:
        encode = self._encode
        return (
            view.id,
            encode(view.payload),
            view.max_retries,
            view.state.value,
            view.attempts,
            view.budget_used,
            encode(view.last_error) if view.last_error is not None else None,
            view.created_at_ms,
            view.updated_at_ms,
            view.next_attempt_at_ms,
            view.version,
            view.created_seq,
            ready_at_ms(view),
            view.priority,
            view.timeout_ms,
            _dumps(view.result) if view.result is not None else None,  # JSON: NUL is escaped
        )

    def state_row(self, view: JobView) -> tuple[Any, ...]:
        """`view_row` without the payload (JOB_COLUMNS but "payload"): for a driver that keeps
        the payload in the job's enqueued event only."""
        row = self.view_row(view)
        return (row[0], *row[2:])

    def views_from_rows(self, rows: Sequence[Sequence[Any]]) -> list[JobView]:
        return [self.view_from_row(r) for r in rows]

    def view_from_row(self, row: Sequence[Any]) -> JobView:
        decode = self._decode
        return JobView(
            id=row[0],
            payload=self._payload(row[1]),
            max_retries=row[2],
            state=_STATE[row[3]],
            attempts=row[4],
            budget_used=row[5],
            last_error=decode(row[6]) if row[6] is not None else None,
            created_at_ms=row[7],
            updated_at_ms=row[8],
            next_attempt_at_ms=row[9],
            version=row[10],
            created_seq=row[11],
            priority=row[13],
            timeout_ms=row[14],
            result=json.loads(row[15]) if row[15] is not None else None,
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
        type=_TYPE[row[3]],
        at_ms=row[4],
        from_state=_STATE[row[5]] if row[5] is not None else None,
        to_state=_STATE[row[6]],
        attempt=row[7],
        data=json.loads(row[8]),
    )
