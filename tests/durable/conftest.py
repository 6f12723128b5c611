from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from domain.events import Event
from domain.projection import project
from domain.states import EventType, JobState
from tests.conftest import STORES, store_url_for
from tests.support.service_process import ServiceProcess


@pytest.fixture(params=["sqlite", "postgres"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A durable STORE: a temporary SQLite file, or the run's PostgreSQL database emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{os.path.join(tmp_path, 'kasp.db')}"
    url: str = request.getfixturevalue("fresh_pg")
    return url


@pytest.fixture
def spawn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start kasp subprocesses; every one is killed at the end, whatever happened."""
    started: list[ServiceProcess] = []

    def start(**env: str) -> ServiceProcess:
        service = ServiceProcess(env, tmp_path / f"kasp-{len(started)}.log")
        started.append(service)
        return service.wait_ready()

    yield start
    for service in started:
        service.close()
    report = getattr(request.node, "report_call", None)  # tests/conftest.py keeps it
    if report is not None and report.failed:
        # A failed crash or restart test is only diagnosable with what the service said.
        for service in started:
            print(f"--- {service.log_path.name} ---\n{service.log()}")


def check_log_invariants(events: list[dict[str, Any]]) -> None:
    """What a crash must never do to the log: duplicate work, skip seqs, or disagree with replay."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "seqs must be 1..n without gaps"
    enqueued = Counter(e["job_id"] for e in events if e["type"] == EventType.ENQUEUED)
    assert set(enqueued.values()) == {1}, "no job may have two enqueued events"
    started = Counter((e["job_id"], e["attempt"]) for e in events if e["type"] == EventType.STARTED)
    assert set(started.values()) == {1}, "every attempt number is started exactly once"
    closing = (EventType.SUCCEEDED, EventType.RETRY_SCHEDULED, EventType.FAILED, EventType.INTERRUPTED)
    outcomes = Counter((e["job_id"], e["attempt"]) for e in events if e["type"] in closing)
    assert set(outcomes.values()) <= {1}, "an attempt has at most one outcome"
    assert set(outcomes) <= set(started), "an outcome closes an attempt that started"


def replay(events: list[dict[str, Any]]) -> dict[str, JobState]:
    """The state of every job according to the log alone (SPEC: replay rebuilds the jobs)."""
    versions: Counter[str] = Counter()
    parsed = []
    for e in events:
        versions[e["job_id"]] += 1
        parsed.append(
            Event(
                type=EventType(e["type"]),
                job_id=e["job_id"],
                at_ms=0,
                from_state=JobState(e["from"]) if e["from"] else None,
                to_state=JobState(e["to"]),
                attempt=e["attempt"],
                version=versions[e["job_id"]],
                data=e["data"],
                seq=e["seq"],
            )
        )
    return {job_id: view.state for job_id, view in project(parsed).items()}


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    return store_url_for(request, tmp_path)
