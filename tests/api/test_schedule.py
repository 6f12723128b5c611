"""Scheduled jobs (run_at / delay_ms): not before their time, promptly at it, holding no place."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.events import parse_ts
from tests.support.server import RunningServer, job_state, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]

#: SPEC-derived promise of this issue: a scheduled job starts within 50 ms after its time.
START_SLACK_MS = 50


def _events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = client.get(f"/jobs/{job_id}/events").json()["events"]
    return events


def _started_at_ms(client: httpx.Client, job_id: str) -> int:
    return parse_ts(next(e["at"] for e in _events(client, job_id) if e["type"] == "started"))


@pytest.mark.parametrize("how", ["delay_ms", "run_at"])
def test_a_scheduled_job_starts_at_its_time_not_before(client: httpx.Client, how: str) -> None:
    due = datetime.now(UTC) + timedelta(milliseconds=600)
    field: dict[str, Any] = {"delay_ms": 600} if how == "delay_ms" else {"run_at": due.isoformat()}
    assert client.post("/enqueue", json={"id": "later", "payload": "", **field}).status_code == 202
    job = client.get("/jobs/later").json()
    assert (job["state"], job["attempts"]) == ("queued", 0)
    due_ms = parse_ts(job["next_attempt_at"])
    assert _events(client, "later")[0]["data"]["run_at"] == job["next_attempt_at"]
    wait_until(lambda: job_state(client, "later") == "done", timeout=10)
    started_ms = _started_at_ms(client, "later")
    assert due_ms <= started_ms <= due_ms + START_SLACK_MS, (started_ms - due_ms, "ms after its time")


def test_a_run_at_in_the_past_runs_now(client: httpx.Client) -> None:
    past = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    assert client.post("/enqueue", json={"id": "overdue", "payload": "", "run_at": past}).status_code == 202
    wait_until(lambda: job_state(client, "overdue") == "done")
    enqueued = _events(client, "overdue")[0]
    assert enqueued["data"]["run_at"] == enqueued["at"], "run_at records when it really became due"


def test_a_scheduled_job_holds_no_queue_place_and_runs_even_when_the_queue_is_full(
    make_server: MakeServer,
) -> None:
    _, client = make_server(workers=1, queue_size=1)
    post = client.post
    assert post("/enqueue", json={"id": "busy", "payload": "forever"}).status_code == 202
    wait_until(lambda: job_state(client, "busy") == "running")
    for i in range(3):
        assert post("/enqueue", json={"id": f"s{i}", "payload": "", "delay_ms": 400}).status_code == 202
    assert post("/enqueue", json={"id": "ready", "payload": ""}).status_code == 202, "the place was free"
    assert post("/enqueue", json={"id": "refused", "payload": ""}).status_code == 429
    stats = client.get("/stats").json()
    assert (stats["queue"]["depth"], stats["queue"]["delayed"]) == (1, 3)
    # Due now: ready although the queue is full, so the ready depth exceeds QUEUE_SIZE.
    wait_until(lambda: client.get("/stats").json()["queue"]["depth"] == 4, timeout=10)
    assert client.post("/jobs/busy/cancel").status_code == 202
    wait_until(lambda: all(job_state(client, j) == "done" for j in ("ready", "s0", "s1", "s2")))


def test_scheduled_jobs_survive_a_restart(store_url: str, make_server: MakeServer) -> None:
    if store_url == "memory":
        pytest.skip("the memory store keeps nothing across a restart")
    first, client = make_server()
    assert client.post("/enqueue", json={"id": "kept", "payload": "", "delay_ms": 1500}).status_code == 202
    due = client.get("/jobs/kept").json()["next_attempt_at"]
    first.stop()
    _, again = make_server()
    job = again.get("/jobs/kept").json()
    assert (job["state"], job["next_attempt_at"]) == ("queued", due)
    wait_until(lambda: job_state(again, "kept") == "done", timeout=10)
    started_ms = _started_at_ms(again, "kept")
    assert parse_ts(due) <= started_ms <= parse_ts(due) + START_SLACK_MS
