"""The HTTP API over each store (the `store_url` fixture runs it on memory, SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.support.server import RunningServer, job_state, wait_until


def test_a_job_goes_from_enqueue_to_done_with_its_events_and_stats(
    make_server: Callable[..., tuple[RunningServer, httpx.Client]],
) -> None:
    _, client = make_server()
    r = client.post("/enqueue", json={"id": "a", "payload": "fail,ok", "max_retries": 1})
    assert (r.status_code, r.json(), r.headers["Location"]) == (
        202,
        {"status": "queued", "id": "a"},
        "/jobs/a",
    )
    assert client.post("/enqueue", json={"id": "a", "payload": "fail,ok", "max_retries": 1}).status_code in (
        200,
    )
    assert client.post("/enqueue", json={"id": "a", "payload": "other"}).status_code == 409
    wait_until(lambda: job_state(client, "a") == "done")
    events = client.get("/events", params={"after": 0}).json()
    assert [(e["seq"], e["type"], e["attempt"]) for e in events["events"]] == [
        (1, "enqueued", None),
        (2, "started", 1),
        (3, "retry_scheduled", 1),
        (4, "started", 2),
        (5, "succeeded", 2),
    ]
    assert events["next_after"] == 5
    stats = client.get("/stats").json()
    assert stats["jobs"] == {"queued": 0, "running": 0, "done": 1, "failed": 0, "cancelled": 0}
    assert stats["events"] == {"count": 5, "last_seq": 5}
    view = client.get("/jobs/a").json()
    assert (view["state"], view["attempts"], view["last_error"]) == (
        "done",
        2,
        "scripted failure on attempt 1",
    )


def test_a_full_queue_answers_429_and_records_nothing(
    make_server: Callable[..., tuple[RunningServer, httpx.Client]],
) -> None:
    _, client = make_server(workers=1, queue_size=1, shutdown_timeout=0.2)
    assert client.post("/enqueue", json={"id": "busy", "payload": "sleep=5"}).status_code == 202
    wait_until(lambda: job_state(client, "busy") == "running")
    assert client.post("/enqueue", json={"id": "waiting", "payload": ""}).status_code == 202
    r = client.post("/enqueue", json={"id": "refused", "payload": ""})
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert client.get("/jobs/refused").status_code == 404
    assert client.get("/stats").json()["events"]["last_seq"] == 3
