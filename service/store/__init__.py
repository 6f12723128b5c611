"""Event stores: where the job log lives. `open_store` picks one by the STORE URL."""

from __future__ import annotations

from service.store.base import EventStore, StoreStats
from service.store.memory import MemoryStore


def open_store(url: str, *, retain_finished: int) -> EventStore:
    """The adapter for a STORE URL (already validated by config)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        return MemoryStore(retain_finished=retain_finished)
    raise ValueError(f"no store adapter for {url!r}")


__all__ = ["EventStore", "MemoryStore", "StoreStats", "open_store"]
