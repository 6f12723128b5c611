from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from sanic import Sanic

from service.config import Config
from tests.support.server import FAST, RunningServer

Sanic.test_mode = True  # several apps named "kasp" in one test process

#: The PostgreSQL server the tests use (they create and drop their own database in it).
PG_ADMIN_DSN = os.environ.get("KASP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keep each phase's report on the test, so a fixture can tell a failed test from a passed one."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped afterwards."""
    from tests.support.postgres import create_database, drop_database, dsn_for

    name = f"kasp_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(create_database(PG_ADMIN_DSN, name))
    except OSError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_DSN} ({exc}); start it with .ci/start-postgres"
        )
    yield dsn_for(PG_ADMIN_DSN, name)
    asyncio.run(drop_database(PG_ADMIN_DSN, name))


@pytest.fixture
def fresh_pg(pg_dsn: str) -> str:
    """The run's database with kasp's schema removed: each test starts from an empty store."""
    from tests.support.postgres import drop_schema

    asyncio.run(drop_schema(pg_dsn))
    return pg_dsn


STORES = ["memory", "sqlite", "postgres"]


def store_url_for(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """The STORE URL for a `store_url` fixture parametrised over STORES."""
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return f"sqlite:///{os.path.join(tmp_path, 'kasp.db')}"
    url: str = request.getfixturevalue("fresh_pg")
    return url


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """The STORE a test's server uses: every test that talks to a store runs on each of
    STORES. A test that cannot says why, in one line: `@one_store("why")`."""
    return store_url_for(request, tmp_path)


def one_store(reason: str) -> pytest.MarkDecorator:
    """Run a test on the memory store only; `reason` says why it cannot run on the others."""
    assert reason, "say why the test cannot run on every store"
    return pytest.mark.parametrize("store_url", ["memory"], indirect=True)


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
