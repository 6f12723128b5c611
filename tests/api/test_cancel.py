"""POST /jobs/{id}/cancel: queued jobs at once, running ones within 2 s, finished ones never."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.api.test_enqueue import assert_error
from tests.support.server import RunningServer, job_state, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]

#: SPEC.md, Acting: a running job's attempt is cancelled within 2 s.
CANCEL_WITHIN_S = 2.0


def _types(client: httpx.Client, job_id: str) -> list[str]:
    return [e["type"] for e in client.get(f"/jobs/{job_id}/events").json()["events"]]


def test_queued_delayed_and_scheduled_jobs_are_cancelled_at_once(make_server: MakeServer) -> None:
    hour_ms = 3_600_000  # full jitter: a delay short enough to end during the test is ~1 in 10^5
    _, client = make_server(workers=1, backoff_base_ms=hour_ms, backoff_max_ms=hour_ms)
    post = client.post
    assert post("/enqueue", json={"id": "delayed", "payload": "fail", "max_retries": 1}).status_code == 202
    wait_until(lambda: client.get("/jobs/delayed").json()["next_attempt_at"] is not None)
    assert post("/enqueue", json={"id": "busy", "payload": "forever"}).status_code == 202
    wait_until(lambda: job_state(client, "busy") == "running")
    assert post("/enqueue", json={"id": "ready", "payload": ""}).status_code == 202
    assert post("/enqueue", json={"id": "scheduled", "payload": "", "delay_ms": 60_000}).status_code == 202
    for job_id in ("ready", "delayed", "scheduled"):
        response = post(f"/jobs/{job_id}/cancel")
        assert (response.status_code, response.json()) == (200, {"status": "cancelled", "id": job_id})
        job = client.get(f"/jobs/{job_id}").json()
        assert (job["state"], job["next_attempt_at"]) == ("cancelled", None)
        cancelled = client.get(f"/jobs/{job_id}/events").json()["events"][-1]
        assert (cancelled["type"], cancelled["from"], cancelled["attempt"]) == ("cancelled", "queued", None)
    stats = client.get("/stats").json()
    assert (stats["queue"]["depth"], stats["queue"]["delayed"], stats["jobs"]["cancelled"]) == (0, 0, 3)
    assert post("/jobs/busy/cancel").status_code == 202


def test_a_running_job_is_cancelled_and_its_worker_freed_within_2_s(make_server: MakeServer) -> None:
    _, client = make_server(workers=1)
    assert client.post("/enqueue", json={"id": "long", "payload": "forever"}).status_code == 202
    wait_until(lambda: job_state(client, "long") == "running")
    assert client.post("/enqueue", json={"id": "next", "payload": ""}).status_code == 202
    began = time.monotonic()
    response = client.post("/jobs/long/cancel")
    assert (response.status_code, response.json()) == (202, {"status": "cancelling", "id": "long"})
    assert job_state(client, "long") == "cancelled"
    # The one worker is free again only once the attempt's task is gone: `next` runs.
    wait_until(lambda: job_state(client, "next") == "done", timeout=CANCEL_WITHIN_S)
    assert time.monotonic() - began < CANCEL_WITHIN_S
    last = client.get("/jobs/long/events").json()["events"][-1]
    assert (last["type"], last["from"], last["attempt"]) == ("cancelled", "running", 1)
    assert last["data"]["duration_ms"] >= 0
    assert _types(client, "long") == ["enqueued", "started", "cancelled"], "no outcome after the cancel"
    wait_until(lambda: client.get("/stats").json()["workers"]["busy"] == 0)


def test_a_processor_that_swallows_the_cancel_is_abandoned_and_its_worker_replaced(
    make_server: MakeServer,
) -> None:
    _, client = make_server(workers=1)
    assert client.post("/enqueue", json={"id": "stubborn", "payload": "swallow"}).status_code == 202
    wait_until(lambda: job_state(client, "stubborn") == "running")
    assert client.post("/enqueue", json={"id": "next", "payload": ""}).status_code == 202
    assert client.post("/jobs/stubborn/cancel").status_code == 202
    wait_until(lambda: job_state(client, "next") == "done", timeout=CANCEL_WITHIN_S + 1)
    assert _types(client, "stubborn") == ["enqueued", "started", "cancelled"]
    # The worker that recorded the last outcome counts itself free once that write returns.
    wait_until(lambda: client.get("/stats").json()["workers"] == {"size": 1, "busy": 0})


def test_finished_jobs_cannot_be_cancelled(client: httpx.Client) -> None:
    assert client.post("/enqueue", json={"id": "done", "payload": ""}).status_code == 202
    wait_until(lambda: job_state(client, "done") == "done")
    before = client.get("/stats").json()["events"]["last_seq"]
    body = assert_error(client.post("/jobs/done/cancel"), 409, "invalid_transition")
    assert "done" in body["message"]
    assert client.get("/stats").json()["events"]["last_seq"] == before
    assert_error(client.post("/jobs/missing/cancel"), 404, "not_found")


def test_a_cancelled_job_can_be_retried_and_then_runs(make_server: MakeServer) -> None:
    _, client = make_server()
    assert client.post("/enqueue", json={"id": "again", "payload": "", "delay_ms": 60_000}).status_code == 202
    assert client.post("/jobs/again/cancel").status_code == 200
    assert_error(client.post("/jobs/again/cancel"), 409, "invalid_transition")
    response = client.post("/jobs/again/retry")
    assert (response.status_code, response.json()) == (202, {"status": "queued", "id": "again"})
    wait_until(lambda: job_state(client, "again") == "done")
    assert _types(client, "again") == ["enqueued", "cancelled", "requeued", "started", "succeeded"]


def test_with_two_instances_a_cancel_reaches_the_attempt_wherever_it_runs(
    store_url: str, make_server: MakeServer
) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("only PostgreSQL is shared by several instances")
    _, a = make_server(workers=1)
    _, b = make_server(workers=1)
    for job_id in ("x", "y"):
        assert a.post("/enqueue", json={"id": job_id, "payload": "forever"}).status_code == 202
    # One worker each: both instances hold one of them, so of two cancels sent to `a`,
    # one is for the attempt that `b` runs.
    wait_until(lambda: job_state(a, "x") == job_state(a, "y") == "running", timeout=10)
    wait_until(lambda: [c.get("/stats").json()["workers"]["busy"] for c in (a, b)] == [1, 1])
    began = time.monotonic()
    for job_id in ("x", "y"):
        assert a.post(f"/jobs/{job_id}/cancel").status_code == 202
    wait_until(
        lambda: [c.get("/stats").json()["workers"]["busy"] for c in (a, b)] == [0, 0],
        timeout=CANCEL_WITHIN_S,
    )
    assert time.monotonic() - began < CANCEL_WITHIN_S
    for job_id in ("x", "y"):
        assert _types(b, job_id) == ["enqueued", "started", "cancelled"]


def test_a_stop_right_after_a_cancel_is_not_held_by_the_worker_it_freed(store_url: str) -> None:
    """The worker whose attempt a cancel cut comes back from its next claim after the stop
    began: it must leave, not park where nothing wakes it (the stop then took SHUTDOWN_TIMEOUT
    plus STOP_RECORD_WAIT_S, 15 s here, on SQLite nearly every time)."""
    from service.config import Config
    from tests.support.server import FAST

    config = {**FAST, "store": store_url, "processor": "tests.support.processors:scripted", "workers": 1}
    server = RunningServer(Config(**config)).start()  # type: ignore[arg-type]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/enqueue", json={"id": "j", "payload": "forever"}).status_code == 202
        wait_until(lambda: job_state(client, "j") == "running")
        assert client.post("/jobs/j/cancel").status_code == 202
    began = time.monotonic()
    server.stop()
    took = time.monotonic() - began
    assert took < FAST["shutdown_timeout"], f"the stop took {took:.1f} s"  # type: ignore[operator]
