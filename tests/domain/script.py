"""Builds one job's log command by command, the way the service does, for the domain tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from domain import job
from domain.backoff import Backoff
from domain.events import Event
from domain.projection import JobView, apply
from domain.states import JobState

T0 = 1_764_381_679_000  # 2025-11-29T02:01:19.000Z
POLICY = Backoff(base_ms=100, max_ms=1000)


class Fixed:
    """A RandomSource that always answers `value`."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


class Script:
    """A job's log and its live view: each `do` decides one move, appends it, applies it."""

    def __init__(self, job_id: str = "a", max_retries: int = 0, *, seq: int = 0, **enqueue: Any) -> None:
        first = job.enqueue(job_id, "payload", max_retries, at_ms=T0, **enqueue)
        self.events = [replace(first, seq=seq + 1)]
        self.view = apply(None, self.events[0])
        self.t = T0

    def do(self, command: Callable[..., Event], **kwargs: object) -> Event:
        self.t += 10
        event = replace(command(self.view, at_ms=self.t, **kwargs), seq=len(self.events) + 1)
        self.events.append(event)
        self.view = apply(self.view, event)
        return event

    def fail(self, r: float = 0.5, reason: job.FailureReason = "error") -> Event:
        return self.do(job.fail, error="boom", duration_ms=3, policy=POLICY, rng=Fixed(r), reason=reason)

    def types(self) -> list[str]:
        return [e.type.value for e in self.events]


def view_in(state: JobState) -> JobView:
    """A job's view in `state`, reached by the commands (max_retries 0)."""
    s = Script()
    if state is JobState.QUEUED:
        return s.view
    if state is JobState.CANCELLED:
        s.do(job.cancel)
        return s.view
    s.do(job.start)
    if state is JobState.DONE:
        s.do(job.succeed, duration_ms=1)
    elif state is JobState.FAILED:
        s.fail()
    return s.view
