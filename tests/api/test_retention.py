"""RETAIN_FINISHED on every store, through HTTP: /events starts at the oldest retained seq,
/stats counts what is retained, and a stream behind retention gets `event: gap` first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.observe.sse import Subscriber
from tests.support.server import RunningServer, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]


def events(client: httpx.Client) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = client.get("/events", params={"after": 0, "limit": 1000}).json()["events"]
    return body


def test_events_start_at_the_oldest_retained_seq_and_a_stream_behind_it_gets_a_gap(
    make_server: MakeServer,
) -> None:
    server, client = make_server(retain_finished=3)
    for i in range(10):
        assert client.post("/enqueue", json={"id": f"g{i}", "payload": "ok"}).status_code == 202
        wait_until(lambda i=i: client.get(f"/jobs/g{i}").json()["state"] == "done")
    wait_until(lambda: len(events(client)) == 9)  # durable stores evict in a step after the commit
    retained = events(client)
    assert [e["job_id"] for e in retained] == ["g7"] * 3 + ["g8"] * 3 + ["g9"] * 3
    assert retained[0]["seq"] == 22 and client.get("/jobs/g6").status_code == 404
    stats = client.get("/stats").json()
    assert (stats["jobs"]["done"], stats["events"]) == (3, {"count": 9, "last_seq": 30})

    last = retained[-1]["seq"]
    sub = Subscriber(f"{server.url}/events/stream", stop_when=lambda ms: any(m.id == str(last) for m in ms))
    assert sub.start().done.wait(10)
    gaps = [m for m in sub.messages if m.event == "gap"]
    assert [(g.json()["after"], g.json()["until"], g.json()["missing"]) for g in gaps] == [(0, 30, 21)]
    assert sub.messages.index(gaps[0]) < sub.messages.index(sub.events()[0])
    assert [m.json() for m in sub.events()] == retained
