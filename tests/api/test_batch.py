"""POST /enqueue/batch: each job judged as if sent alone to POST /enqueue, in order, on every store."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.test_enqueue import assert_error, event_count
from tests.observe.test_metrics import scrape, value
from tests.support.server import RunningServer, job_state, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]


def post_batch(client: httpx.Client, jobs: list[Any]) -> list[dict[str, Any]]:
    response = client.post("/enqueue/batch", json={"jobs": jobs})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    results: list[dict[str, Any]] = response.json()["results"]
    assert len(results) == len(jobs)
    return results


def enqueued_ids(client: httpx.Client) -> list[str]:
    events = client.get("/events", params={"type": "enqueued", "limit": 1000}).json()["events"]
    return [e["job_id"] for e in events]


def test_new_jobs_are_accepted_in_order_with_202_and_written_as_posted(client: httpx.Client) -> None:
    jobs = [{"id": f"j{i}", "payload": f"p{i}", "max_retries": i % 3} for i in range(5)]
    results = post_batch(client, jobs)
    assert results == [{"id": f"j{i}", "status": 202, "state": "queued"} for i in range(5)]
    assert enqueued_ids(client) == [f"j{i}" for i in range(5)]
    for i in range(5):
        job = client.get(f"/jobs/j{i}").json()
        assert (job["payload"], job["max_retries"]) == (f"p{i}", i % 3)
    wait_until(lambda: all(job_state(client, f"j{i}") == "done" for i in range(5)))


def test_every_per_job_status_in_one_batch_and_only_the_accepted_are_written(make_server: MakeServer) -> None:
    _, client = make_server(workers=1, queue_size=2, shutdown_timeout=0.2)
    assert client.post("/enqueue", json={"id": "blocker", "payload": "sleep=30"}).status_code == 202
    wait_until(lambda: job_state(client, "blocker") == "running")
    before = event_count(client)
    results = post_batch(
        client,
        [
            {"id": "new", "payload": "p"},  # 202
            {"id": "blocker", "payload": "sleep=30"},  # 200: an identical re-send of a known job
            {"id": "blocker", "payload": "other"},  # 409
            {"id": "bad", "payload": 7},  # 400, naming the field
            ["not", "an", "object"],  # 400, id null
            {"id": "second", "payload": ""},  # 202: the queue's last place
            {"id": "third", "payload": ""},  # 429: the queue is full now
        ],
    )
    statuses = [r["status"] for r in results]
    assert statuses == [202, 200, 409, 400, 400, 202, 429]
    assert results[1] == {"id": "blocker", "status": 200, "state": "running"}
    assert results[2]["id"] == "blocker" and results[2]["error"] == "conflict"
    assert results[3] == {
        "id": "bad",
        "status": 400,
        "error": "invalid_field",
        "message": results[3]["message"],
        "field": "payload",
    }
    assert "string" in results[3]["message"]
    assert (results[4]["id"], results[4]["error"]) == (None, "invalid_json")
    assert "array" in results[4]["message"]
    assert (results[6]["id"], results[6]["error"]) == ("third", "queue_full")
    for refused in (results[2], results[3], results[4], results[6]):
        assert set(refused) <= {"id", "status", "error", "message", "field"}
        assert isinstance(refused["message"], str) and refused["message"]
    assert event_count(client) == before + 2
    assert client.get("/jobs/bad").status_code == 404
    assert client.get("/jobs/third").status_code == 404
    assert client.get("/jobs/blocker").json()["payload"] == "sleep=30"
    samples = scrape(client)
    assert value(samples, "kasp_enqueue_rejected_total", reason="conflict") == 1
    assert value(samples, "kasp_enqueue_rejected_total", reason="invalid") == 2
    assert value(samples, "kasp_enqueue_rejected_total", reason="full") == 1


def test_a_duplicate_id_later_in_the_batch_is_a_resend_of_the_earlier_one(client: httpx.Client) -> None:
    results = post_batch(
        client,
        [
            {"id": "dup", "payload": "p", "max_retries": 1},
            {"id": "dup", "payload": "p", "max_retries": 1},  # identical: 200
            {"id": "dup", "payload": "q", "max_retries": 1},  # different payload: 409
            {"id": "dup", "payload": "p", "max_retries": 2},  # different max_retries: 409
            {"id": "other", "payload": "p"},
            {"id": "dup", "payload": "p", "max_retries": 1},  # still a re-send
        ],
    )
    assert [r["status"] for r in results] == [202, 200, 409, 409, 202, 200]
    assert results[1] == {"id": "dup", "status": 200, "state": "queued"}
    assert results[2]["error"] == results[3]["error"] == "conflict"
    assert enqueued_ids(client) == ["dup", "other"]
    assert client.get("/jobs/dup").json()["payload"] == "p"


def test_a_full_queue_partway_through_refuses_the_rest_but_answers_resends(make_server: MakeServer) -> None:
    _, client = make_server(workers=1, queue_size=3, shutdown_timeout=0.2)
    assert client.post("/enqueue", json={"id": "blocker", "payload": "sleep=30"}).status_code == 202
    wait_until(lambda: job_state(client, "blocker") == "running")
    assert client.post("/enqueue", json={"id": "before", "payload": ""}).status_code == 202
    jobs = [{"id": f"b{i}", "payload": ""} for i in range(5)]
    jobs.append({"id": "b0", "payload": ""})  # a re-send of an accepted job: never 429
    jobs.append({"id": "before", "payload": ""})  # a re-send of a job queued before the batch
    results = post_batch(client, jobs)
    assert [r["status"] for r in results] == [202, 202, 429, 429, 429, 200, 200]
    assert all(r["error"] == "queue_full" for r in results[2:5])
    assert [r["id"] for r in results] == ["b0", "b1", "b2", "b3", "b4", "b0", "before"]
    assert enqueued_ids(client) == ["blocker", "before", "b0", "b1"]
    stats = client.get("/stats").json()
    assert stats["queue"] == {"depth": 3, "capacity": 3, "delayed": 0}
    # Still full (the blocker runs on): a later batch is judged against the queue as it is then.
    retry = post_batch(client, [{"id": "b2", "payload": ""}])
    assert retry[0]["status"] == 429


def test_bad_jobs_among_good_ones_are_refused_alone(client: httpx.Client) -> None:
    jobs: list[Any] = [
        {"id": "good-1", "payload": "a"},
        {"payload": "no id"},
        {"id": "a b", "payload": "p"},
        {"id": "x", "payload": "p", "max_retries": 101},
        {"id": "y", "payload": "p", "max_retries": True},
        {"id": "z"},
        None,
        "a string",
        7,
        {"id": "good-2", "payload": "b"},
    ]
    results = post_batch(client, jobs)
    assert [r["status"] for r in results] == [202, 400, 400, 400, 400, 400, 400, 400, 400, 202]
    fields = [r.get("field") for r in results[1:6]]
    assert fields == ["id", "id", "max_retries", "max_retries", "payload"]
    assert [r["id"] for r in results] == ["good-1", None, None, "x", "y", "z", None, None, None, "good-2"]
    assert [r["error"] for r in results[6:9]] == ["invalid_json"] * 3
    assert enqueued_ids(client) == ["good-1", "good-2"]
    wait_until(lambda: job_state(client, "good-2") == "done")


def test_each_job_gets_the_same_answer_as_if_sent_alone(client: httpx.Client) -> None:
    """The batch and POST /enqueue share one parser and one error table: same codes, fields, messages."""
    bodies: list[Any] = [
        {"id": "a", "payload": "p", "max_retries": "3"},
        {"id": "", "payload": "p"},
        {"id": "a", "payload": None},
        {"id": "a", "payload": "p", "max_retries": 3.0},
        {"payload": "p"},
    ]
    results = post_batch(client, bodies)
    for body, result in zip(bodies, results, strict=True):
        single = client.post("/enqueue", json=body)
        assert result["status"] == single.status_code == 400
        assert {k: v for k, v in result.items() if k not in ("id", "status")} == single.json()
    assert event_count(client) == 0


BAD_BATCHES = [
    (b"{nope", "invalid_json", None),
    (b"[]", "invalid_json", None),
    (b'[{"id": "a", "payload": "p"}]', "invalid_json", None),
    (b"", "invalid_json", None),
    (b"{}", "invalid_field", "jobs"),
    (b'{"jobs": {"id": "a", "payload": "p"}}', "invalid_field", "jobs"),
    (b'{"jobs": null}', "invalid_field", "jobs"),
    (b'{"jobs": []}', "invalid_field", "jobs"),
    (b'{"jobs": [{"id": "a", "payload": "p"}], "extra": 1}', "unknown_field", "extra"),
    (b'{"id": "a", "payload": "p"}', "unknown_field", "id"),
    (
        json.dumps({"jobs": [{"id": f"j{i}", "payload": ""} for i in range(1001)]}).encode(),
        "invalid_field",
        "jobs",
    ),
]


@pytest.mark.parametrize(("body", "code", "field"), BAD_BATCHES)
def test_a_body_that_is_not_one_to_a_thousand_jobs_is_a_400_and_writes_nothing(
    client: httpx.Client, body: bytes, code: str, field: str | None
) -> None:
    response = client.post("/enqueue/batch", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, code, **({"field": field} if field else {}))
    assert event_count(client) == 0


def test_a_thousand_jobs_are_accepted(make_server: MakeServer) -> None:
    _, client = make_server(queue_size=1000)
    results = post_batch(client, [{"id": f"k{i}", "payload": ""} for i in range(1000)])
    assert all(r["status"] == 202 for r in results)
    assert len(enqueued_ids(client)) == 1000
    wait_until(lambda: client.get("/stats").json()["jobs"]["done"] == 1000, timeout=30)


def test_413_415_and_405_as_for_enqueue(make_server: MakeServer) -> None:
    _, client = make_server(max_body_bytes=300)
    big = {"jobs": [{"id": f"j{i}", "payload": "x" * 50} for i in range(5)]}
    assert_error(client.post("/enqueue/batch", json=big), 413, "payload_too_large")
    body = b'{"jobs": [{"id": "a", "payload": "p"}]}'
    response = client.post("/enqueue/batch", content=body, headers={"content-type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")
    for method in ("GET", "PUT", "DELETE"):
        response = client.request(method, "/enqueue/batch")
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "POST"
    assert event_count(client) == 0


def test_a_batch_while_shutting_down_is_a_503_and_writes_nothing(make_server: MakeServer) -> None:
    server, client = make_server(workers=1, shutdown_timeout=5)
    assert client.post("/enqueue", json={"id": "slow", "payload": "sleep=0.4"}).status_code == 202
    wait_until(lambda: job_state(client, "slow") == "running")
    drain = server.begin_shutdown()
    wait_until(lambda: client.get("/readyz").status_code == 503)
    response = client.post("/enqueue/batch", json={"jobs": [{"id": "late", "payload": ""}]})
    assert_error(response, 503, "shutting_down")
    assert response.headers["retry-after"] == "5"
    drain.result(10)
    assert client.get("/jobs/late").status_code == 404
    assert "late" not in enqueued_ids(client)


def test_a_lone_surrogate_refuses_only_its_job(client: httpx.Client) -> None:
    body = b'{"jobs": [{"id": "ok", "payload": "fine"}, {"id": "bad", "payload": "x\\ud800y"}]}'
    response = client.post("/enqueue/batch", content=body, headers={"content-type": "application/json"})
    results = response.json()["results"]
    assert [r["status"] for r in results] == [202, 400]
    assert (results[1]["id"], results[1]["error"], results[1]["field"]) == ("bad", "invalid_text", "payload")
    assert enqueued_ids(client) == ["ok"]


def test_a_batch_nested_too_deep_is_refused_whole(client: httpx.Client) -> None:
    deep = b'{"jobs": [{"id": "a", "payload": "p", "x": ' + b"[" * 40 + b"]" * 40 + b"}]}"
    response = client.post("/enqueue/batch", content=deep, headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_json")
    assert event_count(client) == 0
