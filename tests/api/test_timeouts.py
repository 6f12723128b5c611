"""Attempt timeouts: an attempt over its limit is cancelled and counts as failed, reason `timeout`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.support.server import RunningServer, job_state, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]


def _outcomes(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events = client.get(f"/jobs/{job_id}/events").json()["events"]
    return [e for e in events if e["type"] in ("succeeded", "retry_scheduled", "failed", "interrupted")]


def test_an_attempt_over_its_timeout_fails_with_reason_timeout_then_retries(make_server: MakeServer) -> None:
    _, client = make_server(workers=2)
    body = {"id": "slow", "payload": "forever,forever", "max_retries": 1, "timeout_ms": 300}
    assert client.post("/enqueue", json=body).status_code == 202
    wait_until(lambda: job_state(client, "slow") == "failed", timeout=10)
    first, last = _outcomes(client, "slow")
    assert (first["type"], first["data"]["reason"], last["type"], last["data"]["reason"]) == (
        "retry_scheduled",
        "timeout",
        "failed",
        "timeout",
    )
    for outcome in (first, last):
        assert 300 <= outcome["data"]["duration_ms"] < 1000, outcome  # about timeout_ms
        assert "300 ms" in outcome["data"]["error"]
    assert "timeout" in client.get("/jobs/slow").json()["last_error"]


def test_the_pool_keeps_every_worker_through_timeouts(make_server: MakeServer) -> None:
    _, client = make_server(workers=2)
    for i in range(4):
        body = {"id": f"t{i}", "payload": "forever", "timeout_ms": 100}
        assert client.post("/enqueue", json=body).status_code == 202
    wait_until(lambda: all(job_state(client, f"t{i}") == "failed" for i in range(4)), timeout=10)
    for i in range(4):
        assert client.post("/enqueue", json={"id": f"after{i}", "payload": ""}).status_code == 202
    wait_until(lambda: all(job_state(client, f"after{i}") == "done" for i in range(4)))
    # The worker that recorded the last outcome counts itself free once that write returns.
    wait_until(lambda: client.get("/stats").json()["workers"] == {"size": 2, "busy": 0})


def test_a_processor_that_swallows_the_cancellation_is_still_cut_off(make_server: MakeServer) -> None:
    _, client = make_server(workers=1)
    body = {"id": "stubborn", "payload": "swallow", "timeout_ms": 200}
    assert client.post("/enqueue", json=body).status_code == 202
    wait_until(lambda: job_state(client, "stubborn") == "failed", timeout=10)
    (outcome,) = _outcomes(client, "stubborn")
    assert (outcome["type"], outcome["data"]["reason"]) == ("failed", "timeout")
    # The one worker was not lost to the processor that would not stop.
    assert client.post("/enqueue", json={"id": "next", "payload": ""}).status_code == 202
    wait_until(lambda: job_state(client, "next") == "done", timeout=10)
    # The worker that recorded the last outcome counts itself free once that write returns.
    wait_until(lambda: client.get("/stats").json()["workers"] == {"size": 1, "busy": 0})


def test_attempt_timeout_ms_applies_when_a_job_names_none(make_server: MakeServer) -> None:
    _, client = make_server(attempt_timeout_ms=150)
    assert client.post("/enqueue", json={"id": "default", "payload": "forever"}).status_code == 202
    assert (
        client.post("/enqueue", json={"id": "own", "payload": "sleep=0.4", "timeout_ms": 0}).status_code
        == 202
    )
    wait_until(lambda: job_state(client, "default") == "failed", timeout=10)
    assert _outcomes(client, "default")[0]["data"]["reason"] == "timeout"
    wait_until(lambda: job_state(client, "own") == "done", timeout=10)  # 0: no limit, overrides


def test_every_failed_attempt_carries_a_reason(client: httpx.Client) -> None:
    assert client.post("/enqueue", json={"id": "err", "payload": "fail", "max_retries": 1}).status_code == 202
    wait_until(lambda: job_state(client, "err") == "failed")
    assert [o["data"]["reason"] for o in _outcomes(client, "err")] == ["error", "error"]
