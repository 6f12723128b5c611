"""API_TOKEN and READ_TOKEN exactly as SPEC.md's Access section says, one row per test."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.support.server import RunningServer, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]

API = "api-secret-1"
READ = "read-secret-2"
JOB = {"id": "a1", "payload": "ok"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def last_seq(client: httpx.Client, token: str | None = None) -> int:
    headers = bearer(token) if token else {}
    seq: int = client.get("/stats", headers=headers).json()["events"]["last_seq"]
    return seq


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == code and body["message"], body
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def failed_job(client: httpx.Client, token: str | None) -> str:
    headers = bearer(token) if token else {}
    assert client.post("/enqueue", json={"id": "bad", "payload": "fail"}, headers=headers).status_code == 202
    wait_until(lambda: client.get("/jobs/bad", headers=headers).json()["state"] == "failed")
    return "bad"


def test_no_tokens_means_no_authentication(make_server: MakeServer) -> None:
    _, client = make_server()
    assert client.post("/enqueue", json=JOB).status_code == 202
    assert client.get("/jobs/a1").status_code == 200
    job = failed_job(client, None)
    assert client.post(f"/jobs/{job}/retry").status_code == 202


def test_api_token_guards_acting_and_leaves_reading_open(make_server: MakeServer) -> None:
    _, client = make_server(api_token=API)
    before = last_seq(client)
    assert_refused(client.post("/enqueue", json=JOB), 401, "unauthorized")
    assert_refused(client.post("/enqueue", json=JOB, headers=bearer("nope")), 401, "unauthorized")
    assert_refused(
        client.post("/enqueue", json=JOB, headers={"Authorization": "Basic eDp5"}), 401, "unauthorized"
    )
    assert last_seq(client) == before, "a refused request changed nothing"
    assert client.get("/jobs/a1").status_code == 404
    assert client.post("/enqueue", json=JOB, headers=bearer(API)).status_code == 202
    assert client.get("/jobs/a1").status_code == 200  # reading needs no token: READ_TOKEN is not set
    job = failed_job(client, API)
    seq = last_seq(client)
    assert_refused(client.post(f"/jobs/{job}/retry"), 401, "unauthorized")
    assert last_seq(client) == seq
    assert client.post(f"/jobs/{job}/retry", headers=bearer(API)).status_code == 202


def test_read_token_guards_reading_and_leaves_acting_open(make_server: MakeServer) -> None:
    _, client = make_server(read_token=READ)
    for path in ("/jobs", "/jobs/a1", "/jobs/a1/events", "/events", "/stats"):
        assert_refused(client.get(path), 401, "unauthorized")
        assert_refused(client.get(path, headers=bearer("wrong")), 401, "unauthorized")
    assert client.post("/enqueue", json=JOB).status_code == 202  # only READ_TOKEN set: acting is open
    assert client.get("/jobs/a1", headers=bearer(READ)).json()["id"] == "a1"
    assert client.get("/stats", headers=bearer(READ)).status_code == 200


def test_with_both_tokens_the_read_token_reads_and_gets_403_on_acting(make_server: MakeServer) -> None:
    _, client = make_server(api_token=API, read_token=READ)
    assert client.post("/enqueue", json=JOB, headers=bearer(API)).status_code == 202
    for token in (READ, API):
        assert client.get("/jobs/a1", headers=bearer(token)).status_code == 200
    assert_refused(client.get("/jobs/a1"), 401, "unauthorized")
    before = last_seq(client, READ)
    assert_refused(
        client.post("/enqueue", json={"id": "a2", "payload": "ok"}, headers=bearer(READ)), 403, "forbidden"
    )
    job = failed_job(client, API)
    seq = last_seq(client, READ)
    assert seq > before
    assert_refused(client.post(f"/jobs/{job}/retry", headers=bearer(READ)), 403, "forbidden")
    assert last_seq(client, READ) == seq, "a refused request changed nothing"
    assert client.get("/jobs/a2", headers=bearer(API)).status_code == 404
    assert client.post(f"/jobs/{job}/retry", headers=bearer(API)).status_code == 202


@pytest.mark.parametrize(
    "path",
    ["/healthz", "/readyz", "/metrics", "/openapi.json", "/swagger/", "/docs/", "/docs/DOCUMENTATION.md"],
)
def test_probes_metrics_and_docs_stay_open(make_server: MakeServer, path: str) -> None:
    _, client = make_server(api_token=API, read_token=READ)
    assert client.get(path).status_code == 200


def test_the_event_stream_takes_the_token_or_the_session_cookie(make_server: MakeServer) -> None:
    server, client = make_server(api_token=API, read_token=READ)
    assert_refused(client.get("/events/stream"), 401, "unauthorized")
    for headers in (bearer(READ), {"Cookie": f"kasp_session={READ}"}):
        with httpx.stream("GET", f"{server.url}/events/stream", headers=headers, timeout=10) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert next(response.iter_lines()).startswith("retry:")
    with httpx.Client(base_url=server.url, cookies={"kasp_session": "wrong"}) as wrong:
        assert_refused(wrong.get("/events/stream"), 401, "unauthorized")


def test_tokens_never_show_in_the_docs_or_the_configuration_repr(make_server: MakeServer) -> None:
    server, client = make_server(api_token=API, read_token=READ)
    for path in ("/openapi.json", "/docs/", "/docs/DOCUMENTATION.md", "/metrics"):
        assert API not in client.get(path).text and READ not in client.get(path).text
    assert API not in repr(server.app.ctx.config) and READ not in repr(server.app.ctx.config)
