"""POST /enqueue: every row of SPEC.md's status table, and "a rejected request changes nothing"."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.server import RunningServer, job_state, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]


def event_count(client: httpx.Client) -> int:
    return client.get("/stats").json()["events"]["last_seq"]


def assert_error(response: httpx.Response, status: int, code: str, **extra: Any) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    for key, value in extra.items():
        assert body[key] == value
    return body


def test_a_new_job_is_accepted_with_202_and_its_location(client: httpx.Client) -> None:
    response = client.post("/enqueue", json={"id": "task-123", "payload": "hello", "max_retries": 5})
    assert response.status_code == 202
    assert response.json() == {"status": "queued", "id": "task-123"}
    assert response.headers["location"] == "/jobs/task-123"
    job = client.get("/jobs/task-123").json()
    assert (job["payload"], job["max_retries"]) == ("hello", 5)


def test_max_retries_defaults_to_zero_and_payload_may_be_empty(client: httpx.Client) -> None:
    assert client.post("/enqueue", json={"id": "a", "payload": ""}).status_code == 202
    assert client.get("/jobs/a").json()["max_retries"] == 0


def test_an_identical_resend_answers_200_with_the_current_state_and_creates_nothing(
    client: httpx.Client,
) -> None:
    body = {"id": "same", "payload": "p", "max_retries": 1}
    assert client.post("/enqueue", json=body).status_code == 202
    wait_until(lambda: job_state(client, "same") == "done")
    before = event_count(client)
    response = client.post("/enqueue", json=body)
    assert response.status_code == 200
    assert response.json() == {"status": "done", "id": "same"}
    assert event_count(client) == before
    assert len(client.get("/jobs/same/events").json()["events"]) == 3


@pytest.mark.parametrize("other", [{"payload": "q", "max_retries": 1}, {"payload": "p", "max_retries": 2}])
def test_the_same_id_with_different_content_is_a_409(client: httpx.Client, other: dict[str, Any]) -> None:
    assert client.post("/enqueue", json={"id": "x", "payload": "p", "max_retries": 1}).status_code == 202
    wait_until(lambda: job_state(client, "x") == "done")
    before = event_count(client)
    assert_error(client.post("/enqueue", json={"id": "x", **other}), 409, "conflict")
    assert event_count(client) == before
    assert client.get("/jobs/x").json()["payload"] == "p"


BAD_BODIES = [
    (b'{"id": "a", "payload": ', "invalid_json", None),
    (b"[1, 2]", "invalid_json", None),
    (b'"just a string"', "invalid_json", None),
    (b"", "invalid_json", None),
    (b'{"id": "a", "payload": "p", "max_retries": NaN}', "invalid_json", None),
    (b'{"payload": "p"}', "invalid_field", "id"),
    (b'{"id": "", "payload": "p"}', "invalid_field", "id"),
    (b'{"id": "' + b"a" * 129 + b'", "payload": "p"}', "invalid_field", "id"),
    (b'{"id": "a b", "payload": "p"}', "invalid_field", "id"),
    (b'{"id": "a/b", "payload": "p"}', "invalid_field", "id"),
    ('{"id": "caf\u00e9", "payload": "p"}'.encode(), "invalid_field", "id"),
    (b'{"id": 7, "payload": "p"}', "invalid_field", "id"),
    (b'{"id": "a"}', "invalid_field", "payload"),
    (b'{"id": "a", "payload": null}', "invalid_field", "payload"),
    (b'{"id": "a", "payload": 12}', "invalid_field", "payload"),
    (b'{"id": "a", "payload": {"k": 1}}', "invalid_field", "payload"),
    (b'{"id": "a", "payload": "p", "max_retries": true}', "invalid_field", "max_retries"),
    (b'{"id": "a", "payload": "p", "max_retries": 3.0}', "invalid_field", "max_retries"),
    (b'{"id": "a", "payload": "p", "max_retries": "3"}', "invalid_field", "max_retries"),
    (b'{"id": "a", "payload": "p", "max_retries": -1}', "invalid_field", "max_retries"),
    (b'{"id": "a", "payload": "p", "max_retries": 101}', "invalid_field", "max_retries"),
    (b'{"id": "a", "payload": "p", "max_retries": null}', "invalid_field", "max_retries"),
]


@pytest.mark.parametrize(("body", "code", "field"), BAD_BODIES)
def test_bad_bodies_get_400_naming_the_problem_and_change_nothing(
    client: httpx.Client, body: bytes, code: str, field: str | None
) -> None:
    response = client.post("/enqueue", content=body, headers={"content-type": "application/json"})
    extra = {"field": field} if field else {}
    assert_error(response, 400, code, **extra)
    assert event_count(client) == 0
    assert client.get("/jobs").json()["jobs"] == []


def test_the_longest_id_and_every_allowed_character_are_accepted(client: httpx.Client) -> None:
    for job_id in ["a" * 128, "AZaz09-_.:@~"]:
        assert client.post("/enqueue", json={"id": job_id, "payload": ""}).status_code == 202
        assert client.get(f"/jobs/{job_id}").status_code == 200


def test_a_body_over_max_body_bytes_is_a_413(make_server: MakeServer) -> None:
    _, client = make_server(max_body_bytes=200)
    body = {"id": "big", "payload": "x" * 300}
    assert_error(client.post("/enqueue", json=body), 413, "payload_too_large")
    huge = {"id": "huge", "payload": "x" * 200_000}  # beyond Sanic's own limit too
    assert_error(client.post("/enqueue", json=huge), 413, "payload_too_large")
    assert event_count(client) == 0
    assert client.post("/enqueue", json={"id": "small", "payload": "x"}).status_code == 202


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_a_non_json_content_type_is_a_415(client: httpx.Client, content_type: str) -> None:
    response = client.post(
        "/enqueue", content=b'{"id": "a", "payload": "p"}', headers={"content-type": content_type}
    )
    assert_error(response, 415, "unsupported_media_type")
    assert event_count(client) == 0


def test_json_with_a_charset_is_accepted_and_no_content_type_is_a_415(client: httpx.Client) -> None:
    body = b'{"id": "a", "payload": "p"}'
    ok = client.post("/enqueue", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 202
    raw = client.build_request("POST", "/enqueue", content=b'{"id": "b", "payload": "p"}')
    assert "content-type" not in raw.headers  # what a Blob or sendBeacon body looks like: no preflight
    assert_error(client.send(raw), 415, "unsupported_media_type")
    assert client.get("/jobs/b").status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_a_405_with_allow(client: httpx.Client, method: str) -> None:
    response = client.request(method, "/enqueue")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


def test_a_full_queue_is_a_429_with_retry_after_but_a_resend_is_still_answered(
    make_server: MakeServer,
) -> None:
    _, client = make_server(workers=1, queue_size=2, shutdown_timeout=0.2)
    assert client.post("/enqueue", json={"id": "blocker", "payload": "sleep=30"}).status_code == 202
    wait_until(lambda: job_state(client, "blocker") == "running")
    for i in range(2):
        assert client.post("/enqueue", json={"id": f"q{i}", "payload": ""}).status_code == 202
    before = event_count(client)
    response = client.post("/enqueue", json={"id": "one-too-many", "payload": ""})
    assert_error(response, 429, "queue_full")
    assert response.headers["retry-after"] == "1"
    assert event_count(client) == before
    assert client.get("/jobs/one-too-many").status_code == 404
    resend = client.post("/enqueue", json={"id": "q0", "payload": ""})
    assert (resend.status_code, resend.json()) == (200, {"status": "queued", "id": "q0"})
    stats = client.get("/stats").json()
    assert stats["queue"] == {"depth": 2, "capacity": 2, "delayed": 0}


def test_enqueue_while_shutting_down_is_a_503_and_reads_still_work(make_server: MakeServer) -> None:
    server, client = make_server(workers=1, shutdown_timeout=5)
    assert client.post("/enqueue", json={"id": "slow", "payload": "sleep=0.4"}).status_code == 202
    wait_until(lambda: job_state(client, "slow") == "running")
    drain = server.begin_shutdown()
    wait_until(lambda: client.get("/readyz").status_code == 503)
    assert client.get("/readyz").json() == {"status": "draining"}
    response = client.post("/enqueue", json={"id": "late", "payload": ""})
    assert_error(response, 503, "shutting_down")
    assert response.headers["retry-after"] == "5"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/jobs/slow").status_code == 200
    assert client.get("/stats").json()["accepting"] is False
    drain.result(10)
    assert job_state(client, "slow") == "done"  # the running attempt finished before the drain ended
    assert client.get("/jobs/late").status_code == 404


def test_every_response_to_a_bad_request_is_json_even_for_html_clients(client: httpx.Client) -> None:
    for method, path in [("GET", "/nope"), ("DELETE", "/enqueue"), ("GET", "/jobs/unknown")]:
        response = client.request(method, path, headers={"accept": "text/html"})
        assert response.headers["content-type"] == "application/json"
        assert set(response.json()) >= {"error", "message"}


def test_a_malformed_http_request_does_not_hurt_the_service(client: httpx.Client) -> None:
    host, port = client.base_url.host, client.base_url.port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"POST /enqueue HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 400")
    assert client.get("/healthz").status_code == 200
