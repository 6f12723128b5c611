"""Enqueue load from a background thread, keeping every response for the checks."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.server import wait_until


@dataclass(frozen=True, slots=True)
class Answer:
    job_id: str
    status: int
    error: str | None
    retry_after: str | None


@dataclass
class EnqueueLoad:
    """POST /enqueue in a loop (one connection, like a steady producer) until `stop()`."""

    url: str
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> EnqueueLoad:
        self._thread = threading.Thread(target=self._run, name="enqueue-load", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=15) as client:
            n = 0
            while not self._stop.is_set():
                n += 1
                job_id = f"load-{n}"
                response = client.post("/enqueue", json={"id": job_id, "payload": "ok"})
                body: dict[str, Any] = response.json() if response.status_code != 202 else {}
                self.answers.append(
                    Answer(
                        job_id, response.status_code, body.get("error"), response.headers.get("retry-after")
                    )
                )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the load thread did not stop"

    def count(self, status: int) -> int:
        return sum(a.status == status for a in self.answers)

    def wait_for(self, status: int, more_than: int, timeout: float = 30.0) -> None:
        wait_until(lambda: self.count(status) > more_than, timeout=timeout, interval=0.01)

    def accepted(self) -> set[str]:
        return {a.job_id for a in self.answers if a.status == 202}

    def check_answers(self) -> None:
        """SPEC, Faults: nothing but 202, 429 or 503 store_unavailable with Retry-After."""
        statuses = {a.status for a in self.answers}
        assert statuses <= {202, 429, 503}, f"unexpected statuses {statuses - {202, 429, 503}}"
        for a in self.answers:
            if a.status == 503:
                assert a.error == "store_unavailable", a
                assert a.retry_after is not None and int(a.retry_after) > 0, a


def all_jobs(client: httpx.Client) -> dict[str, str]:
    """Every job's state, paged through GET /jobs."""
    states: dict[str, str] = {}
    cursor: int | None = 0
    while cursor is not None:
        page = client.get("/jobs", params={"limit": 500, "cursor": cursor}).json()
        states.update({j["id"]: j["state"] for j in page["jobs"]})
        cursor = page["next_cursor"]
    return states


def wait_all_finished(client: httpx.Client, ids: set[str], timeout: float = 30.0) -> None:
    """Every id ends done or failed (SPEC: no job that got a 202 is lost or left running)."""

    def finished() -> bool:
        stats = client.get("/stats").json()
        return stats["jobs"]["queued"] == 0 and stats["jobs"]["running"] == 0

    wait_until(finished, timeout=timeout, interval=0.05)
    states = all_jobs(client)
    missing = ids - states.keys()
    assert not missing, f"{len(missing)} accepted jobs are gone: {sorted(missing)[:5]}"
    unfinished = {i: states[i] for i in ids if states[i] not in ("done", "failed")}
    assert not unfinished, unfinished
