from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from sanic import Sanic

from service.config import Config
from tests.support.server import FAST, RunningServer

Sanic.test_mode = True  # several apps named "kasp" in one test process


@pytest.fixture
def store_url() -> str:
    """The STORE the API tests run against."""
    return "memory"


@pytest.fixture
def make_server(store_url: str) -> Iterator[Callable[..., tuple[RunningServer, httpx.Client]]]:
    """Start a real kasp server with FAST settings overridden by keyword arguments."""
    running: list[tuple[RunningServer, httpx.Client]] = []

    def make(**overrides: object) -> tuple[RunningServer, httpx.Client]:
        settings = {**FAST, "store": store_url, "processor": "tests.support.processors:scripted", **overrides}
        server = RunningServer(Config(**settings)).start()  # type: ignore[arg-type]
        client = httpx.Client(base_url=server.url, timeout=10)
        running.append((server, client))
        return server, client

    yield make
    for server, client in running:
        client.close()
        server.stop()


@pytest.fixture
def client(make_server: Callable[..., tuple[RunningServer, httpx.Client]]) -> httpx.Client:
    return make_server()[1]
