"""Results (the processor's return value) and GET /jobs/{id}?wait=S, the request/reply pattern."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from domain.events import parse_ts
from tests.api.test_enqueue import assert_error
from tests.support.processors import RESULT
from tests.support.server import RunningServer, job_state, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]

#: This issue's promise: ?wait answers within 50 ms of the job finishing.
WAKE_SLACK_S = 0.05


def test_a_returned_dict_round_trips_into_the_view_and_the_event(client: httpx.Client) -> None:
    assert client.post("/enqueue", json={"id": "answer", "payload": "result"}).status_code == 202
    job = client.get("/jobs/answer", params={"wait": 5}).json()
    expected = {**RESULT, "job": "answer", "attempt": 1}
    assert (job["state"], job["result"]) == ("done", expected)
    succeeded = client.get("/jobs/answer/events").json()["events"][-1]
    assert (succeeded["type"], succeeded["data"]["result"]) == ("succeeded", expected)


@pytest.mark.parametrize(("payload", "words"), [("nonjson", "not a JSON value"), ("big", "65537 bytes")])
def test_a_result_that_is_not_json_or_too_big_fails_the_attempt(
    client: httpx.Client, payload: str, words: str
) -> None:
    assert client.post("/enqueue", json={"id": "bad", "payload": payload}).status_code == 202
    job = client.get("/jobs/bad", params={"wait": 5}).json()
    assert (job["state"], job["result"]) == ("failed", None)
    assert words in job["last_error"]
    failed = client.get("/jobs/bad/events").json()["events"][-1]
    assert (failed["type"], failed["data"]["reason"]) == ("failed", "error")


def test_wait_answers_as_soon_as_the_job_finishes(client: httpx.Client) -> None:
    assert client.post("/enqueue", json={"id": "soon", "payload": "sleep=0.5"}).status_code == 202
    response = client.get("/jobs/soon", params={"wait": 5})
    answered = time.time()
    assert response.status_code == 200 and response.json()["state"] == "done"
    finished = parse_ts(client.get("/jobs/soon/events").json()["events"][-1]["at"]) / 1000
    assert answered - finished < WAKE_SLACK_S, f"answered {answered - finished:.3f} s after the finish"


def test_wait_gives_up_after_its_seconds_with_the_view(client: httpx.Client) -> None:
    assert client.post("/enqueue", json={"id": "never", "payload": "forever"}).status_code == 202
    wait_until(lambda: job_state(client, "never") == "running")
    began = time.monotonic()
    response = client.get("/jobs/never", params={"wait": 5})
    waited = time.monotonic() - began
    assert response.status_code == 200 and response.json()["state"] == "running"
    assert 5 <= waited < 5 + 1, waited
    assert client.post("/jobs/never/cancel").status_code == 202


def test_several_waiters_are_all_woken_and_a_cancel_ends_a_wait(client: httpx.Client) -> None:
    assert client.post("/enqueue", json={"id": "shared", "payload": "forever"}).status_code == 202
    answers: list[dict[str, Any]] = []

    def wait() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            answers.append(own.get("/jobs/shared", params={"wait": 20}).json())

    threads = [threading.Thread(target=wait) for _ in range(5)]
    for thread in threads:
        thread.start()
    wait_until(lambda: job_state(client, "shared") == "running")
    assert client.post("/jobs/shared/cancel").status_code in (200, 202)
    for thread in threads:
        thread.join(5)
    assert [a["state"] for a in answers] == ["cancelled"] * 5


def test_wait_on_a_finished_or_unknown_job_answers_at_once(client: httpx.Client) -> None:
    assert client.post("/enqueue", json={"id": "quick", "payload": ""}).status_code == 202
    wait_until(lambda: job_state(client, "quick") == "done")
    began = time.monotonic()
    assert client.get("/jobs/quick", params={"wait": 30}).json()["state"] == "done"
    assert_error(client.get("/jobs/nobody", params={"wait": 30}), 404, "not_found")
    assert time.monotonic() - began < 1


@pytest.mark.parametrize("value", ["-1", "61", "abc", "1e3", "nan", "inf", "0x10", " 5"])
def test_a_bad_wait_is_a_400(client: httpx.Client, value: str) -> None:
    assert client.post("/enqueue", json={"id": "j", "payload": ""}).status_code == 202
    assert_error(client.get("/jobs/j", params={"wait": value}), 400, "invalid_parameter", field="wait")


def test_wait_zero_or_a_fraction_is_fine(client: httpx.Client) -> None:
    assert client.post("/enqueue", json={"id": "j", "payload": "forever"}).status_code == 202
    assert client.get("/jobs/j", params={"wait": "0"}).status_code == 200
    assert client.get("/jobs/j", params={"wait": "0.2"}).json()["state"] in ("queued", "running")
    assert client.post("/jobs/j/cancel").status_code in (200, 202)


def test_with_two_instances_a_wait_is_woken_by_the_other_instance(
    store_url: str, make_server: MakeServer
) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("only PostgreSQL is shared by several instances")
    _, a = make_server(workers=1)
    _, b = make_server(workers=1)
    for job_id in ("hold1", "hold2"):
        assert a.post("/enqueue", json={"id": job_id, "payload": "forever"}).status_code == 202
    wait_until(lambda: job_state(a, "hold1") == job_state(a, "hold2") == "running", timeout=10)
    assert a.post("/enqueue", json={"id": "soon", "payload": "sleep=0.3"}).status_code == 202
    answers: dict[str, tuple[float, str]] = {}

    def wait(name: str, client: httpx.Client) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            state = own.get("/jobs/soon", params={"wait": 10}).json()["state"]
            answers[name] = (time.time(), state)

    threads = [threading.Thread(target=wait, args=item) for item in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    # Free one instance's worker: `soon` runs there, and one of the two waiters is on the other.
    assert a.post("/jobs/hold1/cancel").status_code == 202
    for thread in threads:
        thread.join(15)
    finished = parse_ts(a.get("/jobs/soon/events").json()["events"][-1]["at"]) / 1000
    for name, (answered, state) in answers.items():
        assert state == "done", name
        assert answered - finished < WAKE_SLACK_S, f"{name} answered {answered - finished:.3f} s late"
    assert a.post("/jobs/hold2/cancel").status_code == 202
