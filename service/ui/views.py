"""What the dashboard's pages show, read from the store the way the API reads it.

Each function returns the context of one template; nothing here keeps state of
its own: every number comes from the store's projection (/stats' counters, a
page of /jobs, a job's events), read when the page or fragment is rendered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from domain.events import Event, format_ts
from domain.projection import JobView
from domain.states import EventType, JobState
from service.parts import Parts

JOBS_PAGE = 50  # rows per page of the jobs table: a screenful, one store read
JOBS_PAGE_READS = 5  # store reads one page may take to fill (a store may return short pages)
FAILURES_SCAN = 10_000  # failed jobs grouped at most per render: bounded work with 100,000 jobs
FAILURES_PER_GROUP = 20  # jobs listed under each error, newest first
FEED_BACKFILL = 30  # events the live feed starts with, so it is not empty on arrival


@dataclass(frozen=True, slots=True)
class Counters:
    jobs: dict[str, int]
    depth: int
    capacity: int
    delayed: int
    busy: int
    workers: int
    last_seq: int
    accepting: bool


async def counters(parts: Parts) -> Counters:
    """/stats, for the overview."""
    s = await parts.store.stats()
    return Counters(
        jobs={state.value: s.jobs.get(state, 0) for state in JobState},
        depth=s.ready,
        capacity=parts.config.queue_size,
        delayed=s.delayed,
        busy=parts.pool.busy,
        workers=parts.pool.size,
        last_seq=s.last_seq,
        accepting=parts.engine.accepting,
    )


@dataclass(frozen=True, slots=True)
class JobsPage:
    jobs: list[JobView]
    state: str | None
    next_cursor: int | None
    cursor: int


async def jobs_page(parts: Parts, *, state: JobState | None, cursor: int) -> JobsPage:
    """One page of the jobs table: JOBS_PAGE rows from `cursor`, in enqueue order.

    It reads one job more than it shows, so a last page that is exactly full
    offers no "next page" that would turn out empty."""
    jobs: list[JobView] = []
    next_cursor: int | None = cursor
    reads = 0
    while next_cursor is not None and len(jobs) <= JOBS_PAGE and reads < JOBS_PAGE_READS:
        page = await parts.store.list_jobs(state=state, limit=JOBS_PAGE + 1 - len(jobs), cursor=next_cursor)
        jobs.extend(page.jobs)
        next_cursor = page.next_cursor
        reads += 1
    if len(jobs) > JOBS_PAGE:
        jobs = jobs[:JOBS_PAGE]
        next_cursor = jobs[-1].created_seq
    return JobsPage(jobs=jobs, state=state.value if state else None, next_cursor=next_cursor, cursor=cursor)


@dataclass(slots=True)
class FailureGroup:
    error: str
    count: int = 0
    newest_ms: int = 0
    jobs: list[JobView] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Failures:
    groups: list[FailureGroup]
    scanned: int
    complete: bool  #: False when more failed jobs exist than FAILURES_SCAN


async def failures(parts: Parts) -> Failures:
    """Failed jobs grouped by last_error; the group with the newest failure first."""
    groups: dict[str, FailureGroup] = {}
    cursor: int | None = 0
    scanned = 0
    while cursor is not None and scanned < FAILURES_SCAN:
        page = await parts.store.list_jobs(
            state=JobState.FAILED, limit=min(1000, FAILURES_SCAN - scanned), cursor=cursor
        )
        for view in page.jobs:
            error = view.last_error or "(no error recorded)"
            group = groups.setdefault(error, FailureGroup(error))
            group.count += 1
            group.newest_ms = max(group.newest_ms, view.updated_at_ms)
            group.jobs.append(view)
        scanned += len(page.jobs)
        cursor = page.next_cursor
    ordered = sorted(groups.values(), key=lambda g: g.newest_ms, reverse=True)
    for group in ordered:
        group.jobs = sorted(group.jobs, key=lambda v: v.updated_at_ms, reverse=True)[:FAILURES_PER_GROUP]
    return Failures(groups=ordered, scanned=scanned, complete=cursor is None)


@dataclass(frozen=True, slots=True)
class Step:
    """One line of a job's timeline: an event, with what a person wants to know about it."""

    event: Event
    at: str
    duration_ms: int | None
    error: str | None
    reason: str | None
    delay_ms: int | None
    next_attempt_at: str | None
    result: Any
    has_result: bool


def timeline(events: list[Event]) -> list[Step]:
    steps = []
    for e in events:
        data = e.data
        steps.append(
            Step(
                event=e,
                at=format_ts(e.at_ms),
                duration_ms=data.get("duration_ms"),
                error=data.get("error"),
                reason=data.get("reason"),
                delay_ms=data.get("delay_ms"),
                next_attempt_at=data.get("next_attempt_at"),
                result=data.get("result"),
                has_result=e.type is EventType.SUCCEEDED and "result" in data,
            )
        )
    return steps


_NODE = re.compile(r'<g id="(node\d+)" class="node">\s*<title>([^<]+)</title>')
_PROLOG = re.compile(r"^.*?(?=<svg)", re.DOTALL)


def marked_diagram(svg: bytes | None, state: JobState) -> str | None:
    """The docs' state diagram (generated from the machine by `make doc`), inline,
    with the job's current state's node given the class `current`."""
    if svg is None:
        return None
    text = _PROLOG.sub("", svg.decode("utf-8"), count=1)

    def mark(m: re.Match[str]) -> str:
        node, name = m.group(1), m.group(2)
        classes = "node current" if name == state.value else "node"
        return f'<g id="{node}" class="{classes}" data-state="{name}">\n<title>{name}</title>'

    text = _NODE.sub(mark, text)
    return text.replace("<svg ", '<svg role="img" aria-label="job state diagram" ', 1)
