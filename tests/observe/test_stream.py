"""GET /events/stream against a real server: live order, resume, heartbeats, fan-out, gaps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from service.parts import parts_of
from tests.conftest import one_store
from tests.observe.process import service_process
from tests.observe.sse import Message, Subscriber, parse
from tests.support.server import RunningServer, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]


def all_events(client: httpx.Client) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    after = 0
    while True:
        page = client.get("/events", params={"after": after, "limit": 1000}).json()
        events.extend(page["events"])
        if not page["events"]:
            return events
        after = page["next_after"]


def has_event(job_id: str, event_type: str) -> Callable[[list[Message]], bool]:
    def check(messages: list[Message]) -> bool:
        return any(m.event == event_type and m.json()["job_id"] == job_id for m in messages if m.id)

    return check


def test_subscriber_sees_a_new_jobs_events_live_and_in_order(make_server: MakeServer) -> None:
    server, client = make_server()
    sub = Subscriber(f"{server.url}/events/stream", stop_when=has_event("live-1", "succeeded")).start()
    assert sub.opened.wait(10)
    assert sub.messages[0] == Message("comment", "kasp event stream, events after seq 0")

    assert (
        client.post("/enqueue", json={"id": "live-1", "payload": "fail,ok", "max_retries": 1}).status_code
        == 202
    )
    assert sub.done.wait(10), sub.messages
    assert sub.error is None

    events = sub.events()
    assert [m.event for m in events] == ["enqueued", "started", "retry_scheduled", "started", "succeeded"]
    assert [m.json() for m in events] == client.get("/jobs/live-1/events").json()["events"]
    assert sub.seqs() == [m.json()["seq"] for m in events] == sorted(sub.seqs())


def test_response_is_an_uncached_event_stream(make_server: MakeServer) -> None:
    server, _ = make_server()
    with httpx.stream("GET", f"{server.url}/events/stream", timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        lines = response.iter_lines()
        assert next(lines) == "retry: 1000"


def test_reconnecting_with_last_event_id_resumes_exactly_after_that_seq(make_server: MakeServer) -> None:
    server, client = make_server()
    for i in range(5):
        client.post("/enqueue", json={"id": f"r{i}", "payload": "ok"})
    wait_until(lambda: client.get("/stats").json()["jobs"]["done"] == 5)
    log = all_events(client)
    last = log[-1]["seq"]

    first = Subscriber(
        f"{server.url}/events/stream", stop_when=lambda ms: any(m.id == "7" for m in ms)
    ).start()
    assert first.done.wait(10)
    assert first.seqs() == list(range(1, 8))

    # The reconnect names the last id it saw; ?after= (from the original URL) loses to it.
    resumed = Subscriber(
        f"{server.url}/events/stream?after=2",
        headers={"Last-Event-ID": first.events()[-1].id or ""},
        stop_when=lambda ms: any(m.id == str(last) for m in ms),
    ).start()
    assert resumed.done.wait(10)
    assert resumed.seqs() == list(range(8, last + 1))
    assert [m.json() for m in resumed.events()] == log[7:]


def test_after_parameter_resumes_after_that_seq(make_server: MakeServer) -> None:
    server, client = make_server()
    for i in range(3):
        client.post("/enqueue", json={"id": f"a{i}", "payload": "ok"})
    wait_until(lambda: client.get("/stats").json()["jobs"]["done"] == 3)
    last = client.get("/stats").json()["events"]["last_seq"]
    sub = Subscriber(
        f"{server.url}/events/stream?after=4", stop_when=lambda ms: any(m.id == str(last) for m in ms)
    )
    assert sub.start().done.wait(10)
    assert sub.seqs() == list(range(5, last + 1))


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ("?after=-1", {}, "after"),
        ("?after=abc", {}, "after"),
        ("?after=1&after=2", {}, "after"),
        ("?batch_ms=10", {}, "batch_ms"),  # finer than the default is refused
        ("?batch_ms=60000", {}, "batch_ms"),
        ("?batch_ms=soon", {}, "batch_ms"),
        ("", {"Last-Event-ID": "seven"}, "Last-Event-ID"),
        ("", {"Last-Event-ID": "-3"}, "Last-Event-ID"),
    ],
)
def test_a_bad_resume_point_is_a_400_json_error(
    client: httpx.Client, query: str, headers: dict[str, str], field: str
) -> None:
    response = client.get(f"/events/stream{query}", headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "invalid_parameter"
    assert body["field"] == field
    assert field in body["message"]


def test_an_idle_stream_sends_comment_heartbeats(make_server: MakeServer) -> None:
    server, _ = make_server(stream_heartbeat=0.05)
    sub = Subscriber(
        f"{server.url}/events/stream",
        stop_when=lambda ms: sum(m == Message("comment", "keepalive") for m in ms) >= 3,
    ).start()
    assert sub.done.wait(10), sub.messages
    assert sub.error is None and sub.events() == []


def test_fifty_subscribers_see_every_event_of_a_thousand_jobs(tmp_path: Path, store_url: str) -> None:
    # The service runs in its own process and the test's 50 readers share one asyncio
    # thread: threads in one process would measure GIL hand-offs, not the service.
    # Half of them ask for coarser batching (as the dashboard does): they share their reads
    # (service/stream_pages.py) and must still get every event exactly once, in order.
    jobs, subscribers = 1000, 50
    # Every tenth job fails its first attempt, so retries are in the stream too:
    # 3 events per job, 2 more per retried one, and nothing else on a fresh server.
    last_seq = jobs * 3 + 2 * (jobs // 10)
    env = {
        "WORKERS": "8",
        "QUEUE_SIZE": str(jobs),
        "WORK_MIN_MS": "1",
        "WORK_MAX_MS": "3",
        "BACKOFF_BASE_MS": "5",
        "BACKOFF_MAX_MS": "20",
        "LOG_LEVEL": "WARNING",
    }
    with service_process(env, tmp_path, store_url) as service:
        received = asyncio.run(_fan_out(service.url, jobs, subscribers, last_seq))
        with httpx.Client(base_url=service.url, timeout=10) as client:
            log = all_events(client)
    assert len(log) == last_seq
    assert len(received) == subscribers
    for raw in received:
        messages = list(parse(raw.decode().split("\n")))
        assert [m.json() for m in messages if m.id is not None] == log


async def _fan_out(url: str, jobs: int, subscribers: int, last_seq: int) -> list[bytes]:
    marker = f"id: {last_seq}\n".encode()
    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=httpx.Limits(max_connections=100)
    ) as client:
        opened = [asyncio.Event() for _ in range(subscribers)]

        async def subscribe(opened: asyncio.Event, path: str) -> bytes:
            buffer = bytearray()
            async with client.stream("GET", path) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_bytes():
                    start = max(0, len(buffer) - len(marker))
                    buffer += chunk
                    opened.set()
                    if buffer.find(marker, start) != -1:
                        return bytes(buffer)
            raise AssertionError("the stream ended before the last event")

        paths = ["/events/stream", "/events/stream?batch_ms=500"]
        readers = [asyncio.create_task(subscribe(o, paths[i % 2])) for i, o in enumerate(opened)]
        await asyncio.wait_for(asyncio.gather(*(o.wait() for o in opened)), 10)

        async def enqueue(i: int) -> None:
            payload = "fail,ok" if i % 10 == 0 else "ok"
            response = await client.post(
                "/enqueue", json={"id": f"fan-{i}", "payload": payload, "max_retries": 1}
            )
            assert response.status_code == 202

        for start in range(0, jobs, 10):  # ten requests in flight at a time
            await asyncio.gather(*(enqueue(i) for i in range(start, start + 10)))
        return await asyncio.wait_for(asyncio.gather(*readers), 30)


@one_store("RETAIN_FINISHED evicts on the memory store only until the store core's retention lands")
def test_a_cursor_older_than_retention_gets_a_gap_message(make_server: MakeServer) -> None:
    server, client = make_server(retain_finished=3)
    for i in range(10):
        client.post("/enqueue", json={"id": f"g{i}", "payload": "ok"})
        wait_until(lambda i=i: client.get(f"/jobs/g{i}").json()["state"] == "done")
    retained = all_events(client)
    assert [e["job_id"] for e in retained] == ["g7"] * 3 + ["g8"] * 3 + ["g9"] * 3
    last = retained[-1]["seq"]

    sub = Subscriber(f"{server.url}/events/stream", stop_when=lambda ms: any(m.id == str(last) for m in ms))
    assert sub.start().done.wait(10)
    gaps = [m for m in sub.messages if m.event == "gap"]
    assert len(gaps) == 1
    assert gaps[0].json()["after"] == 0
    assert gaps[0].json()["missing"] == 21
    assert "RETAIN_FINISHED" in gaps[0].json()["message"]
    assert sub.messages.index(gaps[0]) < sub.messages.index(sub.events()[0])
    assert [m.json() for m in sub.events()] == retained


def test_open_streams_end_with_a_shutdown_message_and_carry_the_drains_events(
    make_server: MakeServer,
) -> None:
    server, client = make_server(shutdown_timeout=0.2)
    subs = [Subscriber(f"{server.url}/events/stream").start() for _ in range(3)]
    for sub in subs:
        assert sub.opened.wait(10)
    client.post("/enqueue", json={"id": "slow", "payload": "sleep=30"})
    wait_until(lambda: client.get("/jobs/slow").json()["state"] == "running")

    server.stop()  # the pool interrupts `slow` after 0.2 s, then streams end

    for sub in subs:
        assert sub.done.wait(10)
        assert sub.error is None and sub.ended
        assert [m.event for m in sub.events()] == ["enqueued", "started", "interrupted"]
        assert sub.messages[-1].event == "shutdown"
        assert sub.messages[-1].json()["last_seq"] == 3


def test_a_client_that_disconnects_is_unsubscribed(make_server: MakeServer) -> None:
    server, client = make_server()
    subs = [Subscriber(f"{server.url}/events/stream", stop_when=lambda ms: True).start() for _ in range(3)]
    for sub in subs:
        assert sub.done.wait(10)  # each read its first message and closed the connection
    wait_until(lambda: "kasp_streams 0.0" in client.get("/metrics").text)
    assert parts_of(server.app).feed.subscriptions == set()
    assert parts_of(server.app).feed.dropped == {}


#: Payloads that make every kind of event (retries, results, an error text with a lone
#: surrogate) and data that JSON writes with escapes: non-ASCII, U+2028, NUL, an emoji; with
#: the events each job has at `max_retries` 1.
ODD_PAYLOADS = {
    "ok": 3,
    "result": 3,
    "fail,result": 5,  # enqueued, started, retry_scheduled, started, succeeded
    "raise=surrogate": 5,  # ... and failed
    'é ✓ \u2028 line\u2029 nul\u0000 \U0001f600 "quoted" \\ back': 3,
    "tab\there": 3,
}


def test_a_stream_at_the_head_is_served_from_the_recent_events_exactly_as_the_store_answers(
    make_server: MakeServer,
) -> None:
    # The stream opens before the first event, so it reads the head: from the events the feed's
    # listener holds (service/recent_events.py), not the store. What it gets must be what the
    # store answers GET /events with, on every store.
    server, client = make_server()
    pages = parts_of(server.app).feed.pages
    payloads = [list(ODD_PAYLOADS)[i % len(ODD_PAYLOADS)] for i in range(60)]
    last_seq = sum(ODD_PAYLOADS[p] for p in payloads)
    sub = Subscriber(f"{server.url}/events/stream", until_id=last_seq).start()
    assert sub.opened.wait(10)
    for i, payload in enumerate(payloads):
        response = client.post("/enqueue", json={"id": f"head-{i}", "payload": payload, "max_retries": 1})
        assert response.status_code == 202, response.text
    assert sub.done.wait(20), f"last seq {client.get('/stats').json()['events']['last_seq']}"
    assert sub.error is None and not sub.ended
    log = all_events(client)
    assert len(log) == last_seq
    assert [m.json() for m in sub.events()] == log
    assert [m.event for m in sub.events()] == [e["type"] for e in log]
    assert pages.recent_reads > 0, "the stream at the head read the recent events"
