"""Text with U+0000 is accepted, stored and read back the same on every store; a query
parameter holding it matches nothing (issue 10, item 6)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.support.server import RunningServer, job_state, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]
TEXT = "before \x00 after"


def test_a_payload_and_an_error_holding_nul_round_trip(make_server: MakeServer) -> None:
    _, client = make_server(processor="tests.support.processors:fail_with_payload")
    response = client.post("/enqueue", json={"id": "nul", "payload": TEXT, "max_retries": 0})
    assert response.status_code == 202, response.text
    wait_until(lambda: job_state(client, "nul") == "failed")
    job = client.get("/jobs/nul").json()
    assert (job["payload"], job["last_error"]) == (TEXT, TEXT)
    events = client.get("/jobs/nul/events").json()["events"]
    assert events[0]["data"]["payload"] == TEXT and events[-1]["data"]["error"] == TEXT
    again = client.post("/enqueue", json={"id": "nul", "payload": TEXT, "max_retries": 0})
    assert (again.status_code, again.json()) == (200, {"status": "failed", "id": "nul"})


def test_a_query_parameter_holding_nul_matches_nothing(client: httpx.Client) -> None:
    assert client.post("/enqueue", json={"id": "a", "payload": ""}).status_code == 202
    response = client.get("/events", params={"job_id": "\x00"})
    assert (response.status_code, response.json()) == (200, {"events": [], "next_after": 0})
    assert client.get("/jobs/%00").status_code == 404
    assert client.get("/jobs/%00/events").status_code == 404
