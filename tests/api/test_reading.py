"""Reading endpoints: health, jobs, events, stats; every parameter checked strictly."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from tests.api.test_enqueue import assert_error
from tests.support.server import RunningServer, job_state, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def enqueue(client: httpx.Client, job_id: str, payload: str = "", max_retries: int = 0) -> None:
    response = client.post("/enqueue", json={"id": job_id, "payload": payload, "max_retries": max_retries})
    assert response.status_code == 202, response.text


def settle(client: httpx.Client, *job_ids: str) -> None:
    wait_until(lambda: all(job_state(client, j) in ("done", "failed") for j in job_ids))


def test_health_and_readiness(client: httpx.Client) -> None:
    assert (client.get("/healthz").status_code, client.get("/healthz").json()) == (200, {"status": "ok"})
    assert (client.get("/readyz").status_code, client.get("/readyz").json()) == (200, {"status": "ready"})


def test_a_job_reads_back_with_every_field(client: httpx.Client) -> None:
    enqueue(client, "j1", "fail,ok", max_retries=2)
    settle(client, "j1")
    job = client.get("/jobs/j1").json()
    assert set(job) == {
        "id",
        "payload",
        "max_retries",
        "priority",
        "timeout_ms",
        "state",
        "attempts",
        "last_error",
        "result",
        "created_at",
        "updated_at",
        "next_attempt_at",
    }
    assert (job["priority"], job["timeout_ms"], job["result"]) == (0, None, None)
    assert (job["id"], job["payload"], job["max_retries"], job["state"], job["attempts"]) == (
        "j1",
        "fail,ok",
        2,
        "done",
        2,
    )
    assert job["last_error"] == "scripted failure on attempt 1"
    assert TIMESTAMP.fullmatch(job["created_at"]) and TIMESTAMP.fullmatch(job["updated_at"])
    assert job["updated_at"] >= job["created_at"]
    assert job["next_attempt_at"] is None


def test_a_job_waiting_out_its_retry_delay_is_queued_with_next_attempt_at(make_server: MakeServer) -> None:
    hour_ms = 3_600_000  # full jitter: a delay short enough to end during the test is ~1 in 10^5
    _, client = make_server(backoff_base_ms=hour_ms, backoff_max_ms=hour_ms, shutdown_timeout=0.5)
    enqueue(client, "later", "fail,ok", max_retries=1)
    job = wait_until(lambda: (j := client.get("/jobs/later").json())["next_attempt_at"] and j)
    assert job["state"] == "queued" and job["attempts"] == 1
    assert TIMESTAMP.fullmatch(job["next_attempt_at"])
    stats = client.get("/stats").json()
    assert stats["queue"]["delayed"] == 1 and stats["queue"]["depth"] == 0
    # A delayed retry holds no worker: the one that recorded it is free once its write returns.
    wait_until(lambda: client.get("/stats").json()["workers"]["busy"] == 0)


def test_unknown_jobs_are_404(client: httpx.Client) -> None:
    assert_error(client.get("/jobs/nobody"), 404, "not_found")
    assert_error(client.get("/jobs/nobody/events"), 404, "not_found")
    assert_error(client.post("/jobs/nobody/retry"), 404, "not_found")


def test_job_events_tell_the_whole_story_in_order(client: httpx.Client) -> None:
    enqueue(client, "story", "fail,fail", max_retries=1)
    settle(client, "story")
    events = client.get("/jobs/story/events").json()["events"]
    assert [(e["type"], e["from"], e["to"], e["attempt"]) for e in events] == [
        ("enqueued", None, "queued", None),
        ("started", "queued", "running", 1),
        ("retry_scheduled", "running", "queued", 1),
        ("started", "queued", "running", 2),
        ("failed", "running", "failed", 2),
    ]
    assert events[0]["data"] == {
        "payload": "fail,fail",
        "max_retries": 1,
        "priority": 0,
        "timeout_ms": None,
        "run_at": None,
    }
    retry = events[2]["data"]
    assert set(retry) == {"error", "reason", "duration_ms", "delay_ms", "next_attempt_at"}
    assert retry["reason"] == "error"
    assert 0 <= retry["delay_ms"] <= 5  # BACKOFF_BASE_MS=5: first retry's envelope
    assert events[4]["data"]["error"] == "scripted failure on attempt 2"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and all(TIMESTAMP.fullmatch(e["at"]) for e in events)
    assert all(e["job_id"] == "story" for e in events)
    assert client.get("/jobs/story").json()["state"] == "failed"


def test_jobs_list_in_enqueue_order_with_filter_and_cursor(client: httpx.Client) -> None:
    ids = [f"job-{i:02d}" for i in range(25)]
    for i, job_id in enumerate(ids):
        enqueue(client, job_id, "fail" if i % 5 == 0 else "ok")
    settle(client, *ids)
    seen: list[str] = []
    cursor: str | None = ""
    while cursor is not None:
        page = client.get("/jobs", params={"limit": 7, "cursor": cursor}).json()
        assert len(page["jobs"]) <= 7
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
    assert seen == ids
    failed = client.get("/jobs", params={"state": "failed"}).json()
    assert [j["id"] for j in failed["jobs"]] == ids[::5]
    assert failed["next_cursor"] is None
    assert all(j["state"] == "failed" for j in failed["jobs"])
    assert len(client.get("/jobs").json()["jobs"]) == 25  # default limit 100


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "ten"},
        {"limit": "-1"},
        {"state": "sleeping"},
        {"cursor": "abc"},
        {"cursor": "-5"},
    ],
)
def test_bad_jobs_parameters_are_400(client: httpx.Client, params: dict[str, str]) -> None:
    body = assert_error(client.get("/jobs", params=params), 400, "invalid_parameter")
    assert body["field"] == next(iter(params))


def test_events_page_through_the_whole_log_without_gaps_or_duplicates(client: httpx.Client) -> None:
    ids = [f"e{i}" for i in range(40)]
    for job_id in ids:
        enqueue(client, job_id, "fail,ok", max_retries=1)
    settle(client, *ids)
    last_seq = client.get("/stats").json()["events"]["last_seq"]
    assert last_seq == 40 * 5
    seqs: list[int] = []
    after = 0
    while True:
        page = client.get("/events", params={"after": after, "limit": 37}).json()
        if not page["events"]:
            assert page["next_after"] == after
            break
        seqs += [e["seq"] for e in page["events"]]
        assert page["next_after"] == page["events"][-1]["seq"]
        after = page["next_after"]
    assert seqs == list(range(1, last_seq + 1))


def test_events_filter_by_job_and_type(client: httpx.Client) -> None:
    for job_id in ("a", "b", "c"):
        enqueue(client, job_id)
    settle(client, "a", "b", "c")
    only_b = client.get("/events", params={"job_id": "b"}).json()["events"]
    assert [e["type"] for e in only_b] == ["enqueued", "started", "succeeded"]
    starts = client.get("/events", params={"type": "started"}).json()
    assert [e["job_id"] for e in starts["events"]] == ["a", "b", "c"]
    after_first = client.get("/events", params={"type": "started", "after": starts["events"][0]["seq"]})
    assert [e["job_id"] for e in after_first.json()["events"]] == ["b", "c"]
    empty = client.get("/events", params={"job_id": "zzz", "after": 3}).json()
    assert empty == {"events": [], "next_after": 3}


@pytest.mark.parametrize(
    "params",
    [{"after": "-1"}, {"after": "x"}, {"limit": "0"}, {"limit": "1001"}, {"type": "exploded"}],
)
def test_bad_events_parameters_are_400(client: httpx.Client, params: dict[str, str]) -> None:
    body = assert_error(client.get("/events", params=params), 400, "invalid_parameter")
    assert body["field"] == next(iter(params))


def test_a_repeated_parameter_is_refused(client: httpx.Client) -> None:
    assert_error(client.get("/events?limit=5&limit=6"), 400, "invalid_parameter", field="limit")


def test_stats_count_jobs_events_and_workers(make_server: MakeServer) -> None:
    _, client = make_server(workers=3, queue_size=10)
    for job_id, payload in [("ok1", "ok"), ("ok2", "ok"), ("bad", "fail")]:
        enqueue(client, job_id, payload)
    settle(client, "ok1", "ok2", "bad")
    expected = {
        "accepting": True,
        "queue": {"depth": 0, "capacity": 10, "delayed": 0},
        "workers": {"size": 3, "busy": 0},
        "jobs": {"queued": 0, "running": 0, "done": 2, "failed": 1, "cancelled": 0},
        "events": {"count": 9, "last_seq": 9},
    }
    # A durable store's readers see a commit as soon as it is on disk, a moment before the
    # worker that wrote it hears back and counts itself free: wait for that moment.
    wait_until(lambda: client.get("/stats").json() == expected)


def test_busy_workers_and_running_jobs_show_in_stats(make_server: MakeServer) -> None:
    _, client = make_server(workers=2, shutdown_timeout=0.2)
    for job_id in ("s1", "s2", "s3"):
        enqueue(client, job_id, "sleep=30")
    stats = wait_until(lambda: (s := client.get("/stats").json())["workers"]["busy"] == 2 and s)
    assert stats["jobs"]["running"] == 2 and stats["jobs"]["queued"] == 1
    assert stats["queue"]["depth"] == 1
