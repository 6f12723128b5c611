"""One declaration per route decides its access, and the OpenAPI document says the same."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from service.config import ConfigError, load
from service.http.access import ACT, LOGIN, OPEN, route_level
from service.openapi import OPERATIONS, access_level, document
from tests.docs.test_openapi import _route_key
from tests.support.server import RunningServer

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]


def test_every_route_s_level_is_the_one_openapi_documents(make_server: MakeServer) -> None:
    server, _ = make_server()
    documented = {_route_key(method, path): (method, path) for method, path in OPERATIONS}
    seen = set()
    for route in server.app.router.routes:
        for method in route.methods:
            key = documented[_route_key(method, route.path)]  # tests/docs: every route is documented
            assert route_level(route, method) == access_level(*key, OPERATIONS[key]), key
            seen.add(key)
    assert seen == set(OPERATIONS)


def test_every_post_route_acts_or_is_the_login_and_acting_is_documented() -> None:
    doc = document()
    for (method, path), operation in OPERATIONS.items():
        level = access_level(method, path, operation)
        if method == "post":
            assert level in (ACT, LOGIN), path
        if level is ACT:
            responses = doc["paths"][path][method]["responses"]
            assert {"401", "403", "415"} <= set(responses), path
            assert doc["paths"][path][method]["security"] == [{"bearer": []}, {}]
        if level is OPEN:
            assert "security" not in doc["paths"][path][method]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", ()), ("https://A.example/, http://b:8080", ("https://a.example", "http://b:8080"))],
)
def test_allowed_origins_are_parsed_and_normalised(raw: str, expected: tuple[str, ...]) -> None:
    assert load({"ALLOWED_ORIGINS": raw}).allowed_origins == expected


@pytest.mark.parametrize("raw", ["evil.example", "https://a.example/path", "ftp://x"])
def test_a_malformed_origin_stops_the_service_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="ALLOWED_ORIGINS"):
        load({"ALLOWED_ORIGINS": raw})


def test_a_token_with_spaces_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="API_TOKEN") as caught:
        load({"API_TOKEN": "two words"})
    assert "two words" not in str(caught.value)
