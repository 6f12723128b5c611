"""Events: the append-only facts the job log is made of."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from domain.states import EventType, JobState
from domain.values import value_type

#: The data of an event that carries none: one shared (never mutated) mapping
#: instead of an empty dict per event (~64 B each, 1M+ events retained).
NO_DATA: Mapping[str, Any] = {}


@value_type
class Event:
    """One state change of one job, as SPEC.md's Events section shapes it.

    `version` is the job's own event count once this event is applied (1 for
    `enqueued`): stores reject a second event with the same (job_id, version),
    which is how two writers are stopped from both recording the same move.
    `seq` is the position in the whole log, assigned by the store at commit.
    """

    type: EventType
    job_id: str
    at_ms: int
    from_state: JobState | None
    to_state: JobState
    attempt: int | None
    version: int
    data: Mapping[str, Any] = field(default_factory=lambda: NO_DATA)
    seq: int = 0

    def with_seq(self, seq: int) -> Event:
        """This event as committed at position `seq` of the log.

        Positional on purpose: it runs once per committed event, and
        `dataclasses.replace` costs several times as much (docs/PERFORMANCE.md).
        """
        return Event(
            self.type,
            self.job_id,
            self.at_ms,
            self.from_state,
            self.to_state,
            self.attempt,
            self.version,
            self.data,
            seq,
        )

    def to_dict(self) -> dict[str, Any]:
        # `_value_`, the member's value as a plain attribute (enum's documented sunder name):
        # `.value` is a property at ~100 ns, three times per event in every stream's message
        # (docs/PERFORMANCE.md, Dashboards).
        from_state = self.from_state
        return {
            "seq": self.seq,
            "type": self.type._value_,
            "job_id": self.job_id,
            "at": format_ts(self.at_ms),
            "from": from_state._value_ if from_state is not None else None,
            "to": self.to_state._value_,
            "attempt": self.attempt,
            "data": dict(self.data),
        }


def format_ts(ms: int) -> str:
    """UTC, RFC 3339, millisecond precision, `Z` suffix (SPEC.md, Events)."""
    seconds, millis = divmod(ms, 1000)
    return _second_text(seconds) + _MILLIS_TEXT[millis]


_MILLIS_TEXT = tuple(f".{millis:03d}Z" for millis in range(1000))  #: format_ts's tail, built once


@lru_cache(maxsize=1024)
def _second_text(seconds: int) -> str:
    # Cached: the events of a busy second share it, and `time.strftime` was half the cost of
    # `Event.to_dict` in the stream's message formatting (~3 µs of ~6; docs/PERFORMANCE.md,
    # Dashboards). 1024 seconds of text is ~100 KB.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def format_optional_ts(ms: int | None) -> str | None:
    return None if ms is None else format_ts(ms)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def parse_ts(text: str) -> int:
    """The milliseconds `format_ts` wrote `text` from: how replay reads a time back out of
    an event's data (`enqueued`'s `run_at`). Exact, unlike a float timestamp."""
    return (datetime.fromisoformat(text) - _EPOCH) // _ONE_MS


def parse_optional_ts(text: str | None) -> int | None:
    return None if text is None else parse_ts(text)
