"""tests/store is one conformance suite: every test runs on memory, SQLite and PostgreSQL,
unless it says in one line why it applies to one store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from domain.projection import JobView
from service.clock import now_ms
from service.config import Config
from service.store import EventStore, open_store
from tests.conftest import STORES, store_url_for

T = TypeVar("T")


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    return store_url_for(request, tmp_path)


class StoreHarness:
    """One store on its own event loop, driven from a synchronous test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.store: Any = None
        self.others: list[Any] = []

    def _make(self, lease_timeout_s: float, retain_finished: int) -> Any:
        config = Config(store=self.url, retain_finished=retain_finished, lease_timeout=lease_timeout_s)
        store = open_store(config)
        self.run(store.open())
        return store

    def open(self, *, lease_timeout_s: float = 10.0, retain_finished: int = 1000) -> Any:
        self.store = self._make(lease_timeout_s, retain_finished)
        return self.store

    def another(self, *, lease_timeout_s: float = 10.0, retain_finished: int = 1000) -> Any:
        """A second store on the same URL and loop (a second instance); closed with the harness."""
        other = self._make(lease_timeout_s, retain_finished)
        self.others.append(other)
        return other

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def claim_one(self, store: EventStore, at_ms: int | None = None) -> JobView | None:
        claimed = self.run(store.claim_ready(at_ms=now_ms() if at_ms is None else at_ms))
        return claimed[0] if claimed else None

    def close(self) -> None:
        if self.store is not None:
            self.run(self.store.close())
            self.store = None

    def close_all(self) -> None:
        self.close()
        for other in self.others:
            self.run(other.close())
        self.others = []


@pytest.fixture
def harness(store_url: str) -> Iterator[StoreHarness]:
    h = StoreHarness(store_url)
    yield h
    h.close_all()
    h.loop.close()


@pytest.fixture
def store(harness: StoreHarness) -> EventStore:
    store: EventStore = harness.open()
    return store
