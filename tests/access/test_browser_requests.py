"""What a browser page can make the acting endpoints do: JSON bodies only, same origin only."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.access.test_tokens import assert_refused, failed_job, last_seq
from tests.support.server import RunningServer

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]
BODY = b'{"id": "x1", "payload": "ok"}'


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_non_empty_body_that_is_not_declared_json_is_a_415(
    make_server: MakeServer, content_type: str | None
) -> None:
    _, client = make_server()
    headers = {"content-type": content_type} if content_type else {}
    request = client.build_request("POST", "/enqueue", content=BODY, headers=headers)
    if content_type is None:
        assert "content-type" not in request.headers  # a Blob or sendBeacon body: no preflight
    assert_refused(client.send(request), 415, "unsupported_media_type")
    job = failed_job(client, None)
    seq = last_seq(client)
    retry = client.build_request("POST", f"/jobs/{job}/retry", content=b"a=1", headers=headers)
    assert_refused(client.send(retry), 415, "unsupported_media_type")
    assert last_seq(client) == seq
    assert client.get("/jobs/x1").status_code == 404


def test_an_empty_body_needs_no_content_type(make_server: MakeServer) -> None:
    _, client = make_server()
    job = failed_job(client, None)
    request = client.build_request("POST", f"/jobs/{job}/retry")
    assert "content-type" not in request.headers
    assert client.send(request).status_code == 202


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    ],
)
def test_a_cross_site_browser_request_is_a_403(make_server: MakeServer, headers: dict[str, str]) -> None:
    _, client = make_server()
    before = last_seq(client)
    assert_refused(
        client.post("/enqueue", json={"id": "x1", "payload": "ok"}, headers=headers), 403, "cross_site"
    )
    job = failed_job(client, None)
    seq = last_seq(client)
    assert_refused(client.post(f"/jobs/{job}/retry", headers=headers), 403, "cross_site")
    assert last_seq(client) == seq > before
    assert client.get("/jobs/x1").status_code == 404


def test_the_service_s_own_origin_and_allowed_origins_may_act(make_server: MakeServer) -> None:
    server, client = make_server(allowed_origins=("https://ops.example",))
    own = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    assert client.post("/enqueue", json={"id": "own", "payload": "ok"}, headers=own).status_code == 202
    allowed = {"Origin": "https://ops.example", "Sec-Fetch-Site": "cross-site"}
    assert client.post("/enqueue", json={"id": "ops", "payload": "ok"}, headers=allowed).status_code == 202
    other = {"Origin": "https://ops.example:8443"}
    assert_refused(
        client.post("/enqueue", json={"id": "no", "payload": "ok"}, headers=other), 403, "cross_site"
    )


def test_cross_site_reading_is_not_refused(make_server: MakeServer) -> None:
    _, client = make_server()
    assert (
        client.get(
            "/stats", headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        ).status_code
        == 200
    )
