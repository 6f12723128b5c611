from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from service.config import Config
from service.store import EventStore, open_store

T = TypeVar("T")


class StoreHarness:
    """One store on its own event loop, driven from a synchronous test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.store: Any = None

    def open(self, *, lease_timeout_s: float = 10.0) -> Any:
        self.store = open_store(Config(store=self.url, retain_finished=1000, lease_timeout=lease_timeout_s))
        self.run(self.store.open())
        return self.store

    def another(self, *, lease_timeout_s: float = 10.0) -> Any:
        """A second store on the same URL and loop (a second instance)."""
        other = open_store(Config(store=self.url, retain_finished=1000, lease_timeout=lease_timeout_s))
        self.run(other.open())
        return other

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        if self.store is not None:
            self.run(self.store.close())
            self.store = None


@pytest.fixture
def harness(store_url: str) -> Iterator[StoreHarness]:
    h = StoreHarness(store_url)
    yield h
    h.close()
    h.loop.close()


@pytest.fixture
def store(harness: StoreHarness) -> EventStore:
    store: EventStore = harness.open()
    return store
