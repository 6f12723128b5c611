"""Event stores: where the job log lives. `open_store` picks one by the STORE URL."""

from __future__ import annotations

from service.store.base import EventStore, StoreStats
from service.store.memory import MemoryStore


def open_store(url: str, *, retain_finished: int, lease_timeout_s: float = 10.0) -> EventStore:
    """The adapter for a STORE URL (already validated by config); drivers load only when chosen."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        return MemoryStore(retain_finished=retain_finished)
    if scheme == "sqlite":
        from service.store.sqlite import SqliteStore, path_from_url

        return SqliteStore(path_from_url(url))
    if scheme in ("postgresql", "postgres"):
        from service.store.postgres import PostgresStore

        return PostgresStore(url, lease_timeout_s=lease_timeout_s)
    raise ValueError(f"no store adapter for {url!r}")


__all__ = ["EventStore", "MemoryStore", "StoreStats", "open_store"]
