"""The service's parts, built in one place: store, engine, pool, feed, metrics and waiters.

`service/app.py`, `bench/` and the tests all build kasp with `build_parts`, so
the wiring (which listener hears which store, which clock the engine uses) is
written once. Handlers reach the parts through `parts_of(request)`, a typed
object, not through attributes set on `app.ctx` from several places.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from sanic import Request, Sanic

from domain.backoff import Backoff
from domain.processor import Processor
from service.clock import now_ms
from service.config import Config
from service.connections import ConnectionGate, connection_cap
from service.engine import Engine
from service.feed import EventFeed
from service.metrics import Metrics
from service.pool import WorkerPool
from service.processors import load_processor
from service.store import open_store
from service.store.base import EventStore, SharedStore
from service.waiters import JobWaiters

#: kasp's Sanic app; its `ctx` carries `config`, `parts` (once started) and lifecycle flags.
App: TypeAlias = Sanic[Any, Any]


@dataclass(frozen=True, slots=True)
class Parts:
    config: Config
    store: EventStore
    engine: Engine
    pool: WorkerPool
    feed: EventFeed
    metrics: Metrics
    waiters: JobWaiters
    gate: ConnectionGate


async def build_parts(config: Config, *, processor: Processor | None = None) -> Parts:
    """Open the store and wire everything to it; the pool is built but not started.

    Runs on the loop that will serve (the feed binds to it). `processor`
    overrides the configured PROCESSOR (benchmarks pass a no-op).
    """
    store = open_store(config)
    await store.open()
    metrics = Metrics()
    store.add_listener(metrics.on_event)
    feed = EventFeed(poll_interval_s=store.poll_interval_s)
    store.add_listener(feed.on_event)
    waiters = JobWaiters()
    store.add_listener(waiters.on_event)
    if isinstance(store, SharedStore):
        store.add_remote_listener(waiters.on_remote_event)
    engine = Engine(store, capacity=config.queue_size, clock=now_ms)
    pool = WorkerPool(
        store,
        processor if processor is not None else load_processor(config),
        size=config.workers,
        backoff=Backoff(config.backoff_base_ms, config.backoff_max_ms),
        attempt_timeout_ms=config.attempt_timeout_ms,
    )
    gate = ConnectionGate(cap=connection_cap(config.max_connections), deadline_s=config.request_deadline)
    return Parts(
        config=config,
        store=store,
        engine=engine,
        pool=pool,
        feed=feed,
        metrics=metrics,
        waiters=waiters,
        gate=gate,
    )


def parts_of(source: Request | App) -> Parts:
    """The running service's parts, from a request or the app."""
    app = source.app if isinstance(source, Request) else source
    parts: Parts = app.ctx.parts
    return parts
