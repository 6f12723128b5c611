"""SIGKILL while jobs run, restart on the same store: nothing accepted is lost or run twice."""

from __future__ import annotations

from collections.abc import Callable

from domain.states import EventType
from tests.durable.conftest import check_log_invariants, replay
from tests.support.service_process import ServiceProcess, all_events, wait_quietly

JOBS = 24


def test_a_killed_service_restarted_on_its_store_finishes_every_accepted_job(
    durable_url: str, spawn: Callable[..., ServiceProcess]
) -> None:
    env = {"STORE": durable_url, "WORKERS": "4", "LEASE_TIMEOUT": "1"}
    service = spawn(**env)
    accepted = []
    for i in range(JOBS):
        # A mix: slow successes, and failures that retry after a delay.
        payload, retries = ("sleep=0.4", 0) if i % 3 else ("sleepfail=0.2,sleep=0.2", 2)
        r = service.client.post(
            "/enqueue", json={"id": f"job-{i}", "payload": payload, "max_retries": retries}
        )
        assert r.status_code == 202, r.text
        accepted.append(f"job-{i}")

    def some_done_some_running() -> bool:
        jobs = service.client.get("/stats").json()["jobs"]
        return jobs["done"] >= 4 and jobs["running"] >= 2

    wait_quietly(some_done_some_running, timeout=20)
    service.kill()

    restarted = spawn(**env)

    def all_finished() -> bool:
        jobs = restarted.client.get("/stats").json()["jobs"]
        return jobs["done"] + jobs["failed"] == JOBS

    wait_quietly(all_finished, timeout=40)
    events = all_events(restarted.client)
    check_log_invariants(events)
    interrupted = [e for e in events if e["type"] == EventType.INTERRUPTED]
    assert interrupted, "attempts cut off by the kill are recorded as interrupted"
    assert {e["data"]["reason"] for e in interrupted} <= {"restart", "lease_expired"}
    states = replay(events)
    assert sorted(states) == sorted(accepted)
    for job_id in accepted:
        view = restarted.client.get(f"/jobs/{job_id}").json()
        assert view["state"] == "done", view
        assert states[job_id] == "done"
