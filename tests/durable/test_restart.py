"""A graceful stop with a durable store, then a start on it: every unfinished job continues."""

from __future__ import annotations

from collections.abc import Callable

from tests.durable.conftest import check_log_invariants
from tests.support.service_process import ServiceProcess, all_events, wait_quietly


def test_a_restart_continues_queued_delayed_and_interrupted_jobs(
    durable_url: str, spawn: Callable[..., ServiceProcess]
) -> None:
    env = {"STORE": durable_url, "WORKERS": "1", "SHUTDOWN_TIMEOUT": "0.5"}
    first = spawn(**env, BACKOFF_BASE_MS="2000", BACKOFF_MAX_MS="2000")
    post = first.client.post
    assert post("/enqueue", json={"id": "delayed", "payload": "fail,ok", "max_retries": 1}).status_code == 202
    retry_at = wait_quietly(lambda: first.client.get("/jobs/delayed").json()["next_attempt_at"], timeout=10)
    assert post("/enqueue", json={"id": "long", "payload": "sleep=30,ok"}).status_code == 202
    wait_quietly(lambda: first.client.get("/jobs/long").json()["state"] == "running", timeout=10)
    for name in ("q1", "q2"):
        assert post("/enqueue", json={"id": name, "payload": ""}).status_code == 202
    assert first.terminate() == 0

    second = spawn(**env)
    for name in ("delayed", "long", "q1", "q2"):
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
    second_try = next(
        e for e in events if e["job_id"] == "delayed" and e["type"] == "started" and e["attempt"] == 2
    )
    assert second_try["at"] >= retry_at, "a delayed retry keeps its next_attempt_at across the restart"
    for name in ("q1", "q2"):
        assert [e["type"] for e in events if e["job_id"] == name] == ["enqueued", "started", "succeeded"]
