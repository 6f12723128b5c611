"""Two kasp processes on one PostgreSQL database: one queue, each attempt run once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.durable.conftest import check_log_invariants
from tests.observe.sse import Subscriber
from tests.support.recording import read_records
from tests.support.service_process import ServiceProcess, all_events, iter_events, wait_quietly

JOBS = 2000


def enqueue_all(services: list[ServiceProcess], ids: list[str], payload: str, threads: int = 16) -> None:
    """POST every id, alternating instances, from several client threads; each must get 202."""

    def post(i: int) -> None:
        r = services[i % len(services)].client.post("/enqueue", json={"id": ids[i], "payload": payload})
        assert r.status_code == 202, r.text

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, range(len(ids))))


def test_two_instances_share_the_queue_and_losing_one_loses_nothing(
    fresh_pg: str, spawn: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    records = tmp_path / "records"
    records.mkdir()
    env = {
        "STORE": fresh_pg,
        "WORKERS": "4",
        "LEASE_TIMEOUT": "1",
        "PROCESSOR": "tests.support.recording:recorded",
        "KASP_TEST_RECORD_DIR": str(records),
    }
    a, b = spawn(**env), spawn(**env)
    answered = 0
    lock = threading.Lock()

    def post(i: int) -> None:
        """Like a client with a fallback: on a dead instance, re-send the same request to the other."""
        nonlocal answered
        body = {"id": f"job-{i}", "payload": "0.005"}
        try:
            r = (a if i % 2 else b).client.post("/enqueue", json=body)
            assert r.status_code == 202, r.text
        except httpx.TransportError:
            r = b.client.post("/enqueue", json=body)
            assert r.status_code in (200, 202), r.text  # 200: a committed it before it died
        with lock:
            answered += 1
            if answered == JOBS // 2:
                a.kill()  # mid-run: half the jobs accepted, attempts running on both

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(post, range(JOBS)))
    assert a.proc.returncode is not None

    wait_quietly(lambda: b.client.get("/stats").json()["jobs"]["done"] == JOBS, timeout=90)
    events = all_events(b.client)
    check_log_invariants(events)
    assert {e["job_id"] for e in events} == {f"job-{i}" for i in range(JOBS)}
    ran = read_records(records)
    assert len(ran) == 2 and all(ran.values()), "both instances ran attempts"
    attempts = [pair for pairs in ran.values() for pair in pairs]
    assert len(attempts) == len(set(attempts)), "every attempt ran on exactly one instance"
    started = {(e["job_id"], e["attempt"]) for e in events if e["type"] == "started"}
    interrupted = {(e["job_id"], e["attempt"]) for e in events if e["type"] == "interrupted"}
    assert set(attempts) <= started
    assert started - set(attempts) <= interrupted, "an attempt that never ran was cut off by the kill"
    assert {e["data"]["reason"] for e in events if e["type"] == "interrupted"} <= {"lease_expired"}


def test_a_reader_paging_events_sees_every_seq_once_while_two_instances_append(
    fresh_pg: str, spawn: Callable[..., ServiceProcess]
) -> None:
    env = {"STORE": fresh_pg, "WORKERS": "4", "PROCESSOR": "tests.support.recording:recorded"}
    a, b = spawn(**env, KASP_TEST_RECORD_DIR="/dev/null/x"), spawn(**env, KASP_TEST_RECORD_DIR="/dev/null/x")
    # The processor cannot record (/dev/null is no directory): every attempt fails fast, which only
    # adds events; what matters here is appends from both instances at full speed.
    writers_done = threading.Event()
    seen: list[int] = []

    def read() -> None:
        with httpx.Client(base_url=b.url, timeout=10) as reader:
            after = 0
            while True:
                finished = writers_done.is_set()
                page = reader.get("/events", params={"after": after, "limit": 50}).json()
                seen.extend(e["seq"] for e in page["events"])
                after = page["next_after"]
                if finished and not page["events"]:
                    return

    reader = threading.Thread(target=read, name="events-reader")
    reader.start()
    try:
        enqueue_all([a, b], [f"r-{i}" for i in range(600)], payload="")
        wait_quietly(lambda: b.client.get("/stats").json()["jobs"]["failed"] == 600, timeout=60)
    finally:
        writers_done.set()
        reader.join(60)
    last_seq = b.client.get("/stats").json()["events"]["last_seq"]
    assert seen == list(range(1, last_seq + 1)), "every seq exactly once, in order"
    assert sum(1 for _ in iter_events(a.client)) == last_seq


def test_a_stream_on_one_instance_gets_the_other_instances_events_in_seq_order(
    fresh_pg: str, spawn: Callable[..., ServiceProcess]
) -> None:
    # Instance a's stream reads the head from the events a committed (service/recent_events.py);
    # b's events are never among them, and the holes they leave must send a's stream to the
    # store: every seq of both, once, in order, with the store's content.
    env = {"STORE": fresh_pg, "WORKERS": "4", "PROCESSOR": "tests.support.processors:scripted"}
    a, b = spawn(**env), spawn(**env)
    jobs = 400
    last_seq = 3 * jobs  # enqueued, started, succeeded
    sub = Subscriber(f"{a.url}/events/stream", until_id=last_seq).start()
    assert sub.opened.wait(10)
    enqueue_all([a, b], [f"s-{i}" for i in range(jobs)], payload="ok")
    assert sub.done.wait(60), f"last seq {a.client.get('/stats').json()['events']['last_seq']}"
    assert sub.error is None and not sub.ended
    assert sub.seqs() == list(range(1, last_seq + 1)), "every seq exactly once, in order"
    log = all_events(b.client)
    assert [m.json() for m in sub.events()] == log
    assert {e["job_id"] for e in log if e["type"] == "enqueued"} == {f"s-{i}" for i in range(jobs)}
