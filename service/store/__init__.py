"""Event stores: where the job log lives. `open_store` picks one by the STORE URL."""

from __future__ import annotations

from service.config import Config
from service.store.base import EventStore, StoreStats
from service.store.memory import MemoryStore


def open_store(config: Config) -> EventStore:
    """The adapter `config.store` selects; drivers load only when chosen."""
    kind = config.store_kind
    if kind == "memory":
        return MemoryStore(retain_finished=config.retain_finished)
    if kind == "sqlite":
        from service.store.sqlite import SqliteStore, path_from_url

        return SqliteStore(path_from_url(config.store), retain_finished=config.retain_finished)
    from service.store.postgres import PostgresStore

    return PostgresStore(
        config.store, lease_timeout_s=config.lease_timeout, retain_finished=config.retain_finished
    )


__all__ = ["EventStore", "MemoryStore", "StoreStats", "open_store"]
