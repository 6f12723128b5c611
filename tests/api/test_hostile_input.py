"""Input that used to break kasp (issue 10, items 4, 5, 7, 8), on every store: each gets a
clear 4xx, the same on every store, and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest

from tests.api.test_enqueue import assert_error
from tests.api.test_reading import enqueue, settle
from tests.support.server import RunningServer

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]
JSON = {"content-type": "application/json"}


def _last_seq(client: httpx.Client) -> int:
    seq: int = client.get("/stats").json()["events"]["last_seq"]
    return seq


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"id":"s1","payload":"\\ud800"}', "payload"),
        (b'{"id":"s1","payload":"ok \\udcff tail"}', "payload"),
        (b'{"id":"\\ud800","payload":""}', "id"),
        (b'{"id":"s1","payload":"","max_retries":["\\udfff"]}', "max_retries"),
        (b'{"id":"s1","payload":"","\\ud800":1}', "\\ud800"),
    ],
)
def test_a_lone_surrogate_in_any_field_is_a_400_naming_it_and_writes_nothing(
    client: httpx.Client, body: bytes, field: str
) -> None:
    before = _last_seq(client)
    error = assert_error(
        client.post("/enqueue", content=body, headers=JSON), 400, "invalid_text", field=field
    )
    assert "surrogate" in error["message"]
    assert _last_seq(client) == before
    assert client.get("/jobs/s1").status_code == 404


def test_a_surrogate_pair_is_text_and_round_trips(client: httpx.Client) -> None:
    response = client.post("/enqueue", content=b'{"id":"pair","payload":"\\ud83d\\ude00"}', headers=JSON)
    assert response.status_code == 202, response.text
    settle(client, "pair")
    assert client.get("/jobs/pair").json()["payload"] == "\U0001f600"


@pytest.mark.parametrize("depth", [33, 990, 5000])
def test_deeply_nested_json_is_a_400_not_a_500(client: httpx.Client, depth: int) -> None:
    body = b'{"id":"deep","payload":' + b"[" * depth + b"]" * depth + b"}"
    before = _last_seq(client)
    error = assert_error(client.post("/enqueue", content=body, headers=JSON), 400, "invalid_json")
    assert "32 levels" in error["message"]
    assert _last_seq(client) == before


def test_json_nested_32_levels_is_judged_field_by_field(client: httpx.Client) -> None:
    body = b'{"id":"deep","payload":' + b"[" * 31 + b"]" * 31 + b"}"
    assert_error(client.post("/enqueue", content=body, headers=JSON), 400, "invalid_field", field="payload")


IDS = ["a~b", "user@example.com:42", "x.y_z-1"]


def _is_json(response: httpx.Response) -> bool:
    return response.headers["content-type"].startswith("application/json")


def _job_routes(server: RunningServer) -> list[tuple[str, str]]:
    """(method, path template) of every route that takes a job id from the path."""
    routes = []
    for route in server.app.router.routes:
        if "<job_id" in route.path:
            assert "<job_id:job_id>" in route.path, f"{route.path}: use the job_id path type"
            routes.extend((method, "/" + route.path) for method in route.methods if method != "HEAD")
    assert routes
    return routes


def test_percent_encoded_ids_are_decoded_once_on_every_job_route(make_server: MakeServer) -> None:
    server, client = make_server()
    for job_id in IDS:
        enqueue(client, job_id)
    settle(client, *IDS)
    assert client.get("/jobs/a%7Eb").json()["id"] == "a~b"
    for method, template in _job_routes(server):
        for job_id in IDS:
            # what a browser's encodeURIComponent(id) sends
            path = template.replace("<job_id:job_id>", quote(job_id, safe="!'()*"))
            response = client.request(method, path)
            assert response.status_code != 404, (method, path, response.text)
            assert response.status_code in (200, 202, 409), (method, path, response.text)
            if response.status_code == 409:  # found, and not in a state for this action
                assert response.json()["error"] == "invalid_transition"
            elif "events" in (body := response.json() if _is_json(response) else {}):
                assert {e["job_id"] for e in body["events"]} == {job_id}
            elif body:
                assert body["id"] == job_id
            else:  # a dashboard page of that job
                assert job_id in response.text


@pytest.mark.parametrize("segment", ["a%257Eb", "%00", "a%00b", "%FF", "%ED%A0%80", "a%2Fb", "%20"])
def test_a_path_segment_that_decodes_to_no_possible_id_is_a_404_on_every_job_route(
    make_server: MakeServer, segment: str
) -> None:
    server, client = make_server()
    enqueue(client, "a~b")
    settle(client, "a~b")
    before = _last_seq(client)
    for method, template in _job_routes(server):
        response = client.request(method, template.replace("<job_id:job_id>", segment))
        assert_error(response, 404, "not_found")
    assert _last_seq(client) == before


def test_a_head_too_large_is_431_and_a_request_line_too_large_is_414(client: httpx.Client) -> None:
    body = assert_error(client.get("/healthz", headers={"x-big": "a" * 9000}), 431, "header_fields_too_large")
    assert "head limit" in body["message"]
    assert_error(client.get("/jobs", params={"state": "a" * 9000}), 414, "uri_too_long")
    assert_error(client.get("/jobs/" + "a" * 9000), 414, "uri_too_long")
    # The service still answers, and a body over MAX_BODY_BYTES keeps its 413.
    assert client.get("/healthz").status_code == 200
    too_big = {"id": "big", "payload": "x" * 2_000_000}
    assert_error(client.post("/enqueue", json=too_big), 413, "payload_too_large")
