"""The Sanic application: configuration, routes, and the pool's life inside the server's.

Start:  before_server_start builds the store, engine and pool (unnamed tasks, so
        Sanic's signal handling does not cancel them), after_server_start marks ready.
Stop:   kasp's own signal handler (service/shutdown.py) drains while the listener
        still answers: /enqueue and /readyz say 503 at once, running attempts finish
        (or are interrupted after SHUTDOWN_TIMEOUT), streams end; then it asks Sanic
        to stop, and before_server_stop finds the drain done. See docs/DESIGN.md and
        shared/notes/sanic-transitions.md §1-2 for the order this relies on.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Mapping
from typing import Any

from sanic import Sanic
from sanic.http.constants import HTTP
from sanic.log import LOGGING_CONFIG_DEFAULTS

from service import config as config_module
from service import inspector
from service.config import Config, ConfigError
from service.connections import raise_fd_limit
from service.http import access, batch, docs, drain, enqueue, events, health, jobs, stats, stream
from service.http import metrics as metrics_routes
from service.http.errors import KaspErrorHandler
from service.http.protocol import KaspProtocol
from service.parts import App, build_parts, parts_of
from service.processors import load_processor
from service.shutdown import Shutdown, relay_signals
from service.store.faults import StoreUnavailable
from service.ui import routes as dashboard

log = logging.getLogger("kasp")

APP_NAME = "kasp"
HEAD_BUDGET_BYTES = 64 * 1024  # request line + headers allowed on top of MAX_BODY_BYTES
#: Connections the kernel queues before kasp accepts them (Sanic's default is 100). Under a
#: connection flood (bench/slowloris.py) 100 overflowed and a new client's SYN was dropped,
#: costing it a 1 s+ retransmission; Linux caps this at net.core.somaxconn (4096 by default).
LISTEN_BACKLOG = 1024


class KaspSanic(Sanic[Any, Any]):
    """Sanic whose default listen address is HOST/PORT from kasp's configuration,
    so the plain Sanic CLI serves where `make start` does (-H/-p still win), and whose
    connections run KaspProtocol (request deadline, connection cap, 414/431) however
    the server is started: the CLI and app.run() call prepare(), tests create_server()."""

    def prepare(
        self,
        *args: Any,
        protocol: type[asyncio.Protocol] | None = None,
        backlog: int = LISTEN_BACKLOG,
        **kwargs: Any,
    ) -> None:
        super().prepare(*args, protocol=protocol or KaspProtocol, backlog=backlog, **kwargs)

    async def create_server(
        self,
        *args: Any,
        protocol: type[asyncio.Protocol] | None = None,
        backlog: int = LISTEN_BACKLOG,
        **kwargs: Any,
    ) -> Any:
        return await super().create_server(
            *args, protocol=protocol or KaspProtocol, backlog=backlog, **kwargs
        )

    def get_address(  # type: ignore[override]
        self, host: str | None, port: int | None, version: Any = HTTP.VERSION_1, auto_tls: bool = False
    ) -> tuple[str, int]:
        return Sanic.get_address(host or self.config.HOST, port or self.config.PORT, version, auto_tls)


def create_app(*, environ: Mapping[str, str] | None = None, config: Config | None = None) -> App:
    """Build the service. Keyword-only: the Sanic CLI passes its argparse Namespace positionally."""
    if config is None:
        try:
            config = config_module.load(os.environ if environ is None else environ)
            load_processor(config)  # fail at start, naming PROCESSOR, not at the first attempt
        except ConfigError as exc:
            raise SystemExit(f"kasp: configuration error: {exc}") from None
    _configure_logging(config)

    app = KaspSanic(
        APP_NAME,
        router=access.GuardedRouter(),  # the one access decision for every route (service/http/access.py)
        error_handler=KaspErrorHandler(),
        log_config=_log_config(config),
        inspector_class=inspector.KaspInspector,
    )
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.REQUEST_MAX_SIZE = config.max_body_bytes + HEAD_BUDGET_BYTES
    app.config.ACCESS_LOG = config.access_log
    app.config.HOST, app.config.PORT = config.host, config.port
    app.ctx.config = config
    app.ctx.ready = False
    app.router.register_pattern(jobs.JOB_ID_PARAM, jobs.job_id_from_path, r"[^/]+")
    for module in (
        enqueue,
        batch,
        jobs,
        events,
        health,
        stats,
        docs,
        stream,
        metrics_routes,
        dashboard,
        drain,
    ):
        app.blueprint(module.bp)

    app.main_process_start(_refuse_several_processes)
    app.main_process_ready(relay_signals)
    inspector.configure(app, config)
    app.before_server_start(_start)
    app.after_server_start(_mark_ready)
    app.before_server_stop(_drain)
    app.after_server_stop(_close)
    return app


def _refuse_several_processes(app: App) -> None:
    """Only PostgreSQL is shared between processes; memory and SQLite belong to one."""
    kind = app.ctx.config.store_kind
    if app.state.workers == 1 or kind == "postgres":
        return
    if kind == "sqlite":
        raise SystemExit(
            f"kasp: the SQLite store is served by one process, but {app.state.workers} Sanic "
            "worker processes were asked for; run with --single-process (or one worker), "
            "or use STORE=postgresql://... to share the queue between processes"
        )
    raise SystemExit(
        f"kasp: STORE=memory keeps every job in one process, but {app.state.workers} Sanic "
        "worker processes were asked for; run with --single-process (or one worker), "
        "or use a shared store"
    )


async def _start(app: App) -> None:
    config: Config = app.ctx.config
    soft_before, soft, hard = raise_fd_limit()
    try:
        parts = await build_parts(config)
    except StoreUnavailable as exc:  # docs/STORAGE.md, Faults: kasp starts only on a store it can write
        raise SystemExit(f"kasp: {exc}") from None
    app.ctx.parts = parts
    parts.pool.start()
    app.ctx.shutdown = Shutdown(app, parts, manager_mode=hasattr(app, "multiplexer"))
    log.info(
        "kasp started: %d workers, queue %d, store %s",
        config.workers,
        config.queue_size,
        config.store,
        extra={"action": "service_start"},
    )
    log.info(
        "file descriptors: soft limit %d (was %d), hard limit %d; at most %d client connections, "
        "each request complete within %g s",
        soft,
        soft_before,
        hard,
        parts.gate.cap,
        config.request_deadline,
        extra={"action": "connection_limits"},
    )


def _mark_ready(app: App) -> None:
    # Sync on purpose: Sanic's signal handlers are installed by now (notes §1).
    # Everything built so far (modules, routes, docs, metrics) lives as long as the
    # process: moved out of the collector's sight, it no longer lengthens every full
    # collection on the request path (docs/PERFORMANCE.md). Measured against the worry
    # that a freeze makes full collections more frequent (frozen objects leave the 25%
    # rule's long_lived_total): 202 path, 6 s wrk runs alternated three times, in the
    # measured window: frozen 1-3 full collections of 2-3.5 ms each, unfrozen 1-2 of
    # 30-55 ms, frozen + set_threshold(700, 10, 1000) none; all GC 35-54 / 99-115 / 35-39
    # ms per run, CPU 52.8-56.4 / 52.8-58.6 / 51.2-54.5 µs per request. More frequent, but
    # cheap: ~0.1 µs per request, inside the noise; no figure for a threshold change.
    gc.freeze()
    app.ctx.shutdown.take_over_signals()
    app.ctx.ready = True


async def _drain(app: App) -> None:
    """before_server_stop: the drain a signal began (usually done by now), or one begun here
    when Sanic stops for another reason (the threaded test server, a signal that came
    before after_server_start)."""
    shutdown: Shutdown = app.ctx.shutdown
    # Sanic removed its signal handlers (and so ours) before this listener: handle the
    # signals still to come (main's relay in manager mode, a second Ctrl-C) the same way.
    shutdown.take_over_signals()
    # A second signal re-runs this listener concurrently (notes §1): both share one drain.
    await asyncio.shield(shutdown.begin(stop_server=False))
    # Every stream has ended; what is left (idle keep-alive connections, a slow reader's
    # aborted socket, a request still in flight) gets what remains of the exit budget.
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = shutdown.close_budget_s()


async def _close(app: App) -> None:
    await parts_of(app).store.close()


def _configure_logging(config: Config) -> None:
    logging.getLogger("kasp").setLevel(config.log_level)


def _log_config(config: Config) -> dict[str, object]:
    """Sanic's logging setup plus a handler for kasp's own loggers."""
    log_config: dict[str, object] = {
        k: (v.copy() if isinstance(v, dict) else v) for k, v in LOGGING_CONFIG_DEFAULTS.items()
    }
    loggers = dict(log_config["loggers"])  # type: ignore[call-overload]
    loggers["kasp"] = {"level": config.log_level, "handlers": ["console"], "propagate": False}
    log_config["loggers"] = loggers
    return log_config
