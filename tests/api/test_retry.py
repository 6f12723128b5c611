"""POST /jobs/{id}/retry, and the pool's retry behaviour end to end."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.api.test_enqueue import assert_error
from tests.api.test_reading import enqueue, settle
from tests.support.server import RunningServer, job_state, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]


def test_a_failed_job_goes_back_to_the_queue_with_a_fresh_budget(client: httpx.Client) -> None:
    enqueue(client, "flaky", "fail,fail,fail,ok", max_retries=1)
    settle(client, "flaky")
    assert client.get("/jobs/flaky").json()["attempts"] == 2
    response = client.post("/jobs/flaky/retry")
    assert response.status_code == 202
    assert response.json() == {"status": "queued", "id": "flaky"}
    settle(client, "flaky")
    job = client.get("/jobs/flaky").json()
    assert (job["state"], job["attempts"]) == ("done", 4)
    types = [e["type"] for e in client.get("/jobs/flaky/events").json()["events"]]
    assert types[5:] == ["requeued", "started", "retry_scheduled", "started", "succeeded"]


def test_retry_of_a_job_that_is_not_failed_is_a_409_and_changes_nothing(client: httpx.Client) -> None:
    enqueue(client, "fine")
    settle(client, "fine")
    before = client.get("/stats").json()["events"]["last_seq"]
    body = assert_error(client.post("/jobs/fine/retry"), 409, "invalid_transition")
    assert "done" in body["message"]
    assert client.get("/stats").json()["events"]["last_seq"] == before


def test_retries_are_spread_by_backoff_and_stop_after_max_retries(make_server: MakeServer) -> None:
    _, client = make_server(backoff_base_ms=20, backoff_max_ms=50)
    enqueue(client, "doomed", "fail", max_retries=4)
    settle(client, "doomed")
    events = client.get("/jobs/doomed/events").json()["events"]
    delays = [e["data"]["delay_ms"] for e in events if e["type"] == "retry_scheduled"]
    assert len(delays) == 4
    for n, delay in enumerate(delays, start=1):
        assert 0 <= delay <= min(50, 20 * 2 ** (n - 1))
    assert events[-1]["type"] == "failed" and events[-1]["attempt"] == 5


# An hour's envelope: full jitter could still draw a delay of a few ms, but only
# about once in 10^5 runs, so the retry below is reliably still waiting. That a due
# retry enters the queue past QUEUE_SIZE is shown with explicit clocks in tests/store/.
HOUR_MS = 3_600_000


def test_a_job_waiting_out_its_retry_delay_does_not_count_against_queue_size(
    make_server: MakeServer,
) -> None:
    _, client = make_server(
        workers=1, queue_size=1, backoff_base_ms=HOUR_MS, backoff_max_ms=HOUR_MS, shutdown_timeout=0.2
    )
    enqueue(client, "retrier", "fail,ok", max_retries=1)
    wait_until(lambda: client.get("/stats").json()["queue"]["delayed"] == 1)
    enqueue(client, "filler", "sleep=30")  # takes the only worker
    wait_until(lambda: job_state(client, "filler") == "running")
    enqueue(client, "waiting")  # admitted: the delayed retry holds no place in the queue
    assert client.post("/enqueue", json={"id": "no-room", "payload": ""}).status_code == 429
    assert client.get("/stats").json()["queue"] == {"depth": 1, "capacity": 1, "delayed": 1}


def test_a_crashing_processor_does_not_kill_its_worker(make_server: MakeServer) -> None:
    _, client = make_server(workers=1)
    enqueue(client, "bad", "fail")
    enqueue(client, "good")
    settle(client, "bad", "good")
    assert (job_state(client, "bad"), job_state(client, "good")) == ("failed", "done")
    assert client.get("/stats").json()["workers"] == {"size": 1, "busy": 0}
