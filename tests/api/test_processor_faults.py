"""Whatever a processor raises fails its attempt; no worker is ever lost (issue 10, items 1-3).

Runs on every store: on SQLite and PostgreSQL a fault that escaped the attempt
used to leave the job `running` (or restarting forever), on memory it poisoned
the event stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from tests.api.test_reading import enqueue, settle
from tests.support.processors import RAISES
from tests.support.server import RunningServer, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]

EXPECTED_ERROR = {
    "cancelled": "CancelledError",
    "awaited_cancelled": "CancelledError",
    "system_exit": "3",
    "keyboard_interrupt": "KeyboardInterrupt",
    "generator_exit": "GeneratorExit",
    "odd_base_exception": "odd",
    "surrogate": "cannot parse report-\\udcff.csv",
}


def test_every_fault_of_the_table_is_covered() -> None:
    assert set(EXPECTED_ERROR) == set(RAISES)


@pytest.mark.parametrize("fault", sorted(RAISES))
def test_a_processor_fault_is_a_failed_attempt_and_every_worker_survives(
    make_server: MakeServer, fault: str
) -> None:
    _, client = make_server(workers=4, queue_size=100)
    enqueue(client, "bad", f"raise={fault}", max_retries=1)
    others = [f"other-{i}" for i in range(21)]
    for job_id in others:
        enqueue(client, job_id)
    settle(client, "bad", *others)

    job = client.get("/jobs/bad").json()
    assert (job["state"], job["attempts"], job["last_error"]) == ("failed", 2, EXPECTED_ERROR[fault])
    events = client.get("/jobs/bad/events").json()["events"]
    assert [e["type"] for e in events] == ["enqueued", "started", "retry_scheduled", "started", "failed"]
    for outcome in (events[2], events[4]):
        assert outcome["data"]["error"] == EXPECTED_ERROR[fault]
        assert outcome["data"]["reason"] == "error"
    assert all(client.get(f"/jobs/{j}").json()["state"] == "done" for j in others)

    stats = client.get("/stats").json()
    assert stats["workers"] == {"size": 4, "busy": 0}
    assert client.get("/readyz").json() == {"status": "ready"}
    # ... and the pool still works: four jobs that each hold a worker run at once.
    for i in range(4):
        enqueue(client, f"after-{i}", "sleep=0.5")
    wait_until(lambda: client.get("/stats").json()["workers"]["busy"] == 4)
    settle(client, *(f"after-{i}" for i in range(4)))


def test_the_event_stream_carries_a_failed_attempt_with_a_surrogate_in_its_error(
    make_server: MakeServer,
) -> None:
    _, client = make_server()
    enqueue(client, "bad", "raise=surrogate")
    enqueue(client, "next")
    settle(client, "bad", "next")
    last_seq = client.get("/stats").json()["events"]["last_seq"]
    seen: list[str] = []
    with client.stream("GET", "/events/stream", params={"after": 0}) as stream:
        for line in stream.iter_lines():
            if line.startswith("id: "):
                seen.append(line)
                if int(line[4:]) == last_seq:
                    break
    assert len(seen) == last_seq


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_worker_that_ends_unexpectedly_is_logged_and_replaced(make_server: MakeServer) -> None:
    server, client = make_server(workers=2)
    enqueue(client, "held", "sleep=30")
    wait_until(lambda: client.get("/stats").json()["workers"]["busy"] == 1)
    pool = server.app.ctx.parts.pool
    records = _Records()
    logger = logging.getLogger("kasp.pool")  # "kasp" does not propagate to the root (caplog)
    logger.addHandler(records)
    try:
        # Nothing in kasp cancels a worker but the pool's own shutdown; something else did.
        server.call(lambda: [task.cancel() for task in pool.worker_tasks()])
        wait_until(lambda: sum("replacing it" in m for m in records.messages) == 2)
    finally:
        logger.removeHandler(records)
    # Workers that die within REPLACE_BACKOFF_S of starting are replaced after it.
    wait_until(lambda: client.get("/stats").json()["workers"]["size"] == 2)
    wait_until(lambda: client.get("/jobs/held").json()["state"] in ("queued", "running"))
    events = client.get("/jobs/held/events").json()["events"]
    assert events[2]["type"] == "interrupted"
    for i in range(3):
        enqueue(client, f"later-{i}")
    settle(client, *(f"later-{i}" for i in range(3)))
    assert client.get("/readyz").json() == {"status": "ready"}
