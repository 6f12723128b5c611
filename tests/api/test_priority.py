"""Among ready jobs, higher priority starts first; equal priorities start in the order they became ready."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.support.server import RunningServer, job_state, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]

#: 20 jobs, priorities mixed and repeated, so both the order by priority and FIFO within one show.
PRIORITIES = [0, 5, -3, 5, 100, 0, -100, 5, 0, 42, -3, 100, 7, 0, 42, -100, 7, 5, 1, 0]


def test_with_the_worker_busy_jobs_start_by_priority_then_fifo(make_server: MakeServer) -> None:
    _, client = make_server(workers=1, queue_size=100)
    assert client.post("/enqueue", json={"id": "blocker", "payload": "forever"}).status_code == 202
    wait_until(lambda: job_state(client, "blocker") == "running")
    ids = [f"p{i:02d}" for i in range(len(PRIORITIES))]
    for job_id, priority in zip(ids, PRIORITIES, strict=True):
        body = {"id": job_id, "payload": "", "priority": priority}
        assert client.post("/enqueue", json=body).status_code == 202
    assert client.post("/jobs/blocker/cancel").status_code == 202  # frees the one worker
    wait_until(lambda: client.get("/stats").json()["jobs"]["done"] == len(ids), timeout=15)
    started = [
        e["job_id"]
        for e in client.get("/events", params={"type": "started", "limit": 100}).json()["events"]
        if e["job_id"] != "blocker"
    ]
    # sorted() is stable: within one priority, enqueue order (the order they became ready).
    expected = [job_id for job_id, _ in sorted(zip(ids, PRIORITIES, strict=True), key=lambda p: -p[1])]
    assert started == expected
