"""schemathesis over /openapi.json: every operation, generated requests, on memory and SQLite.

Checks: no server error, responses (status codes, content types, bodies) as documented.
A fixed seed (derandomize) keeps CI deterministic; EXAMPLES per operation bounds the time.
SQLite stands for the durable stores (the cheapest one; tests/api runs PostgreSQL too).
/events/stream is bounded by STREAM_MAX_AGE so its body ends and is checked like any other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.openapi import document
from tests.conftest import store_url_for
from tests.support.server import RunningServer

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]

#: Examples per operation: 100, as the issue asks; about a minute per store for all 17
#: operations on the shared 2-core dev machine (hypothesis stops early where a space is small).
EXAMPLES = 100
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    return store_url_for(request, tmp_path)


@pytest.fixture
def base_url(make_server: MakeServer) -> str:
    server, client = make_server(stream_max_age=0.05, queue_size=1000, max_body_bytes=4096)
    assert client.get("/openapi.json").json() == json.loads(json.dumps(document()))  # what is tested
    return server.url


# The served document, as the code builds it (schemathesis' from_fixture loader does not work
# with pytest 9: it sets Function._nodeid); the fixture above checks the server serves this.
schema = schemathesis.openapi.from_dict(document())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_operation_answers_as_documented(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=10)
