"""The OpenAPI document validates, matches the app's routes, and tells the truth about responses."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
from openapi_spec_validator import validate

from service.http.docs import MISSING_DOCS, SWAGGER_UI_FILES, load_site
from service.openapi import OPERATIONS, document
from tests.docs import contract
from tests.support.server import RunningServer, job_state, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]


def _route_key(method: str, path: str) -> tuple[str, str]:
    """(method, path) with parameter names dropped and the trailing slash ignored, so
    Sanic's `jobs/<job_id:str>` and OpenAPI's `/jobs/{id}` compare equal."""
    path = re.sub(r"<[^>]+>", "{}", path)
    path = re.sub(r"\{[^}]+\}", "{}", path)
    return method.lower(), "/" + path.strip("/")


def test_the_document_is_valid_openapi_3() -> None:
    doc = document()
    validate(doc)
    assert doc["openapi"].startswith("3.")


def test_openapi_json_serves_the_document(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(json.dumps(document()))


def test_every_route_is_documented_and_every_operation_is_a_route(make_server: MakeServer) -> None:
    server, _ = make_server()
    registered = {
        _route_key(method, route.path) for route in server.app.router.routes for method in route.methods
    }
    documented = {_route_key(method, path) for method, path in OPERATIONS}
    assert registered - documented == set(), "routes without an OpenAPI operation"
    assert documented - registered == set(), "OpenAPI operations without a route"


def test_every_operation_lists_its_responses_with_a_schema() -> None:
    for (method, path), operation in OPERATIONS.items():
        assert operation["summary"], (method, path)
        for status, response in operation["responses"].items():
            assert response["description"], (method, path, status)
            for media in response["content"].values():
                assert "schema" in media, (method, path, status)


def test_json_responses_match_the_documented_schemas(make_server: MakeServer) -> None:
    server, client = make_server(workers=1, queue_size=1, max_body_bytes=200)
    check = contract.check
    post = client.post

    # Admission: accepted, repeated, conflicting, malformed, wrong type, too large, wrong method.
    assert check(post("/enqueue", json={"id": "slow", "payload": "sleep=1.0"}))["status"] == "queued"
    assert post("/enqueue", json={"id": "slow", "payload": "sleep=1.0"}).status_code == 200
    check(post("/enqueue", json={"id": "slow", "payload": "sleep=1.0"}))
    assert check(post("/enqueue", json={"id": "slow", "payload": "other"}))["error"] == "conflict"
    assert check(post("/enqueue", content=b"{nope", headers={"content-type": "application/json"}))["error"]
    assert check(post("/enqueue", json={"id": "x", "payload": 3}))["field"] == "payload"
    assert check(post("/enqueue", content=b"id=x", headers={"content-type": "text/plain"}))["error"]
    assert check(post("/enqueue", json={"id": "big", "payload": "x" * 300}))["error"] == "payload_too_large"
    assert check(client.get("/enqueue"))["error"] == "method_not_allowed"

    # The worker holds `slow`; `waiting` fills the queue; the next is refused with 429.
    wait_until(lambda: job_state(client, "slow") == "running")
    assert check(post("/enqueue", json={"id": "waiting", "payload": "fail"})).get("status") == "queued"
    full = post("/enqueue", json={"id": "refused", "payload": ""})
    assert full.status_code == 429
    check(full)
    batch = check(
        post("/enqueue/batch", json={"jobs": [{"id": "slow", "payload": "sleep=1.0"}, {"id": "b"}, 3]})
    )
    assert [r["status"] for r in batch["results"]] == [200, 400, 400]
    batch = check(post("/enqueue/batch", json={"jobs": [{"id": "refused", "payload": ""}]}))
    assert batch["results"][0]["status"] == 429
    assert check(post("/enqueue/batch", json={"jobs": []}))["field"] == "jobs"
    assert check(client.get("/enqueue/batch"))["error"] == "method_not_allowed"

    # Reads.
    check(client.get("/healthz"))
    check(client.get("/readyz"))
    check(client.get("/stats"))
    check(client.get("/jobs/slow"))
    check(client.get("/jobs/missing"))
    check(client.get("/jobs", params={"limit": 1}))
    check(client.get("/jobs", params={"state": "bogus"}))
    check(client.get("/jobs/slow/events"))
    check(client.get("/jobs/missing/events"))
    check(client.get("/events", params={"after": 0, "limit": 2}))
    check(client.get("/events", params={"type": "nope"}))

    # Retry: 409 while not failed, 404 unknown, 202 once `waiting` has failed.
    check(post("/jobs/slow/retry"))
    check(post("/jobs/missing/retry"))
    wait_until(lambda: job_state(client, "waiting") == "failed", timeout=10)
    check(client.get("/jobs/waiting"))  # last_error set
    check(client.get("/events", params={"job_id": "waiting"}))
    assert check(post("/jobs/waiting/retry"))["status"] == "queued"

    # Job control: unknown fields, a bad wait, cancels of every kind, a wait that answers.
    assert check(post("/enqueue", json={"id": "x", "payload": "", "colour": 1}))["field"] == "colour"
    assert check(client.get("/jobs/slow", params={"wait": "abc"}))["field"] == "wait"
    assert check(post("/enqueue", json={"id": "later", "payload": "", "delay_ms": 60_000}))["status"]
    assert check(post("/jobs/later/cancel"))["status"] == "cancelled"
    assert check(post("/jobs/later/cancel"))["error"] == "invalid_transition"
    check(post("/jobs/missing/cancel"))
    assert check(post("/jobs/later/retry"))["status"] == "queued"
    assert check(client.get("/jobs/later", params={"wait": "5"}))["state"] == "done"
    assert check(post("/enqueue", json={"id": "held", "payload": "forever"}))["status"] == "queued"
    wait_until(lambda: job_state(client, "held") == "running", timeout=10)
    assert check(post("/jobs/held/cancel"))["status"] == "cancelling"
    assert check(client.get("/jobs/held", params={"wait": "0.1"}))["state"] == "cancelled"

    # Shutdown: enqueue and readiness say 503 while running attempts drain.
    draining = server.begin_shutdown()
    wait_until(lambda: client.get("/readyz").status_code == 503)
    check(client.get("/readyz"))
    refused = post("/enqueue", json={"id": "late", "payload": ""})
    assert refused.status_code == 503
    check(refused)
    draining.result(10)


def test_docs_routes_answer_as_documented(client: httpx.Client) -> None:
    paths = [
        "/swagger/",
        *(f"/swagger/{name}" for name in (*SWAGGER_UI_FILES, "kasp-init.js")),
        "/docs/",
        "/docs/DOCUMENTATION.md",
        "/docs/docs.css",
        "/docs/state-diagram.svg",
    ]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.content, path
        contract.check(response)


def test_unknown_assets_are_documented_404s(client: httpx.Client) -> None:
    for path in ("/swagger/nothing.js", "/docs/nothing.css"):
        response = client.get(path)
        assert response.status_code == 404
        assert contract.check(response) == {"error": "not_found", "message": "no such file"}


def test_metrics_and_the_event_stream_answer_as_documented(client: httpx.Client) -> None:
    contract.check(client.get("/metrics"))
    contract.check(client.get("/metrics", headers={"Accept": "application/openmetrics-text"}))
    assert contract.check(client.get("/events/stream", params={"after": "x"}))["field"] == "after"
    with client.stream("GET", "/events/stream", params={"after": 0}) as stream:
        assert stream.status_code == 200
        contract.check(stream)


def test_an_installation_without_docs_still_serves_the_api_and_says_what_is_missing(
    make_server: MakeServer, tmp_path: Path
) -> None:
    server, client = make_server()
    site = load_site(tmp_path)  # an empty folder: no DOCUMENTATION.md, no diagram
    server.call(lambda: setattr(server.app.ctx, "docs_site", site))
    for path in ("/docs/", "/docs/DOCUMENTATION.md"):
        assert contract.check(client.get(path)) == {"error": "not_found", "message": MISSING_DOCS}
    assert contract.check(client.get("/docs/state-diagram.svg"))["error"] == "not_found"
    assert client.get("/swagger/").status_code == 200
    assert client.get("/docs/docs.css").status_code == 200
