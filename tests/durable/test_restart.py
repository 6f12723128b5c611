"""A graceful stop with a durable store, then a start on it: every unfinished job continues."""

from __future__ import annotations

import time
from collections.abc import Callable

from domain.events import parse_ts
from tests.durable.conftest import check_log_invariants
from tests.support.service_process import ServiceProcess, all_events, wait_quietly

#: Jobs whose first attempt fails before the stop. Their retry delays are full jitter,
#: uniform(0, RETRY_ENVELOPE_MS): some fall before the stop, and with 12 of them the chance
#: that none is still waiting when the first process exits (about 1 s after the failures
#: here, 2 s on a loaded machine)
#: is (2/8)^12, under 1e-7. The test asserts that at least one crossed the restart.
DELAYED = [f"delayed-{i}" for i in range(12)]
RETRY_ENVELOPE_MS = "8000"


def test_a_restart_continues_queued_delayed_and_interrupted_jobs(
    durable_url: str, spawn: Callable[..., ServiceProcess]
) -> None:
    env = {"STORE": durable_url, "WORKERS": "1", "SHUTDOWN_TIMEOUT": "0.5"}
    first = spawn(**env, BACKOFF_BASE_MS=RETRY_ENVELOPE_MS, BACKOFF_MAX_MS=RETRY_ENVELOPE_MS)
    post = first.client.post
    for name in DELAYED:
        assert post("/enqueue", json={"id": name, "payload": "fail,ok", "max_retries": 1}).status_code == 202
    # The due times come from the log (`retry_scheduled`'s next_attempt_at), which keeps them
    # whether or not the retry ran already: a poll of the job's view could miss a short delay.
    retries = wait_quietly(lambda: _retries_scheduled(first), timeout=10)
    assert post("/enqueue", json={"id": "long", "payload": "sleep=30,ok"}).status_code == 202
    wait_quietly(lambda: first.client.get("/jobs/long").json()["state"] == "running", timeout=10)
    for name in ("q1", "q2"):
        assert post("/enqueue", json={"id": name, "payload": ""}).status_code == 202
    assert first.terminate() == 0
    stopped_ms = int(time.time() * 1000)

    second = spawn(**env)
    for name in (*DELAYED, "long", "q1", "q2"):
        wait_quietly(lambda n=name: second.client.get(f"/jobs/{n}").json()["state"] == "done", timeout=20)
    events = all_events(second.client)
    check_log_invariants(events)
    long_events = [(e["type"], e["attempt"]) for e in events if e["job_id"] == "long"]
    assert long_events == [
        ("enqueued", None),
        ("started", 1),
        ("interrupted", 1),
        ("started", 2),
        ("succeeded", 2),
    ]
    interrupted = next(e for e in events if e["type"] == "interrupted")
    assert interrupted["data"]["reason"] == "shutdown"
    crossed = [name for name, due in retries.items() if parse_ts(due) > stopped_ms]
    assert crossed, f"no retry was still waiting at the restart: {retries}"
    for name, due in retries.items():
        second_try = next(
            e for e in events if e["job_id"] == name and e["type"] == "started" and e["attempt"] == 2
        )
        assert parse_ts(second_try["at"]) >= parse_ts(due), f"{name}'s retry keeps its next_attempt_at"
    for name in ("q1", "q2"):
        assert [e["type"] for e in events if e["job_id"] == name] == ["enqueued", "started", "succeeded"]


def _retries_scheduled(service: ServiceProcess) -> dict[str, str] | None:
    """Each delayed job's retry due time, once every one of them has failed its first attempt."""
    due = {
        e["job_id"]: e["data"]["next_attempt_at"]
        for e in all_events(service.client)
        if e["type"] == "retry_scheduled" and e["job_id"] in DELAYED
    }
    return due if len(due) == len(DELAYED) else None
