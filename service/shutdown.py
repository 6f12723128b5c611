"""Shutdown as SPEC says: one signal is one graceful drain, in both of Sanic's modes.

kasp takes SIGINT/SIGTERM over from Sanic once the server is up and drains
while the loop still serves: /enqueue and /readyz answer 503 from the signal
on, reads keep working (the listener stays open), running attempts finish or
are interrupted after SHUTDOWN_TIMEOUT, open streams get `event: shutdown`
and end. Only then is Sanic asked to stop (`app.stop()`), with nothing left
to wait for, so the process exits within SHUTDOWN_TIMEOUT + EXIT_BUDGET_S
whatever clients are connected. See docs/DESIGN.md "Shutdown".

Signals in Sanic's manager mode (notes §1, §11): Ctrl-C reaches the worker
twice (from the terminal, and relayed by the main process), so there a later
SIGINT is never "a second signal"; a second Ctrl-C or SIGTERM reaches main,
which relays it to the worker as SIGTERM (`relay_signals`) instead of
SIGKILLing the whole process group as Sanic would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from types import FrameType

from service.parts import App, Parts

log = logging.getLogger("kasp")

#: Seconds the process may take past SHUTDOWN_TIMEOUT to exit (SPEC's limit, issue 8: "+ 1 s").
EXIT_BUDGET_S = 1.0
#: Of that budget, what the streams may use to send their last events and `event: shutdown`
#: once the pool has stopped (a guess; a stream that keeps up needs milliseconds).
STREAM_FLUSH_S = 0.25
#: Of that budget, what is kept for the process exit after Sanic's close: in manager mode
#: main took 0.25-0.45 s from the worker's exit to its own on this machine (measured, loaded).
CLOSE_RESERVE_S = 0.5
#: Manager mode: a signal this soon after the first is the same stop delivered twice (a
#: group-wide SIGTERM, as systemd sends, reaches the worker directly and relayed by main).
DUPLICATE_SIGNAL_S = 0.5  # a guess: relays take milliseconds; a person's second Ctrl-C takes longer

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Shutdown:
    """The drain of one running service; at most one per process, whatever signals come."""

    def __init__(self, app: App, parts: Parts, *, manager_mode: bool) -> None:
        self._app = app
        self._parts = parts
        self._manager_mode = manager_mode
        self._loop = asyncio.get_running_loop()
        self.force = asyncio.Event()  #: set by a second signal: stop waiting for attempts
        self.began_at: float | None = None  #: loop time of the first signal (or stop)
        self.task: asyncio.Task[None] | None = None

    # -- signals -----------------------------------------------------------

    def take_over_signals(self) -> None:
        """Replace Sanic's SIGINT/SIGTERM handlers (which stop the server at once) with ours."""
        for sig in _SIGNALS:
            # Outside the main thread (the threaded test server) there are no signals to handle.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, self.on_signal, sig)

    def on_signal(self, sig: signal.Signals) -> None:
        if self.task is None:
            log.info("received %s: shutting down", sig.name, extra={"action": "shutdown_signal"})
            self.begin(stop_server=True)
            return
        assert self.began_at is not None
        since_s = self._loop.time() - self.began_at
        if self._manager_mode and (sig is signal.SIGINT or since_s < DUPLICATE_SIGNAL_S):
            log.info(
                "%s %.1f s into the shutdown: the same stop delivered twice, ignored",
                sig.name,
                since_s,
                extra={"action": "shutdown_duplicate_signal"},
            )
            return
        if not self.task.done() and not self.force.is_set():
            log.warning(
                "second signal (%s) %.1f s into the shutdown: interrupting running attempts now",
                sig.name,
                since_s,
                extra={"action": "shutdown_forced"},
            )
            self.force.set()

    # -- the drain ---------------------------------------------------------

    def begin(self, *, stop_server: bool) -> asyncio.Task[None]:
        """Start the drain (once). `stop_server`: ask Sanic to stop when it ends, as a
        signal does; a stop Sanic already began (before_server_stop) passes False."""
        if self.task is None:
            self._parts.engine.accepting = False  # /enqueue and /readyz: 503 from now on
            self.began_at = self._loop.time()
            self.task = self._loop.create_task(self._run(stop_server), name="kasp-shutdown")
        return self.task

    @property
    def exit_deadline(self) -> float:
        """Loop time by which the process should have exited."""
        assert self.began_at is not None
        return self.began_at + self._parts.config.shutdown_timeout + EXIT_BUDGET_S

    def close_budget_s(self) -> float:
        """Seconds Sanic may still wait for connections once the drain has ended."""
        return max(0.1, self.exit_deadline - CLOSE_RESERVE_S - self._loop.time())

    async def _run(self, stop_server: bool) -> None:
        try:
            await self._drain()
        finally:
            if stop_server:
                # terminate=True (the default): in manager mode this also tells the main
                # process to stop, or it would wait for a worker that is gone (notes §2).
                self._app.stop()

    async def _drain(self) -> None:
        parts = self._parts
        log.info(
            "shutting down: no new jobs; waiting up to %.1f s for %d running attempts",
            parts.config.shutdown_timeout,
            parts.pool.busy,
            extra={"action": "shutdown_begin"},
        )
        try:
            await parts.pool.stop(timeout_s=parts.config.shutdown_timeout, force=self.force)
            await _report_drain(parts)
        finally:
            # After the pool, so streams still carry the drain's own events; in `finally`
            # so a failing drain never leaves streams holding the exit open. Long-polls
            # (?wait=) answer now with the job as it is, for the same reason.
            parts.waiters.close()
            assert self.began_at is not None
            timeout_at = self.began_at + parts.config.shutdown_timeout
            await parts.feed.close(flush_until=min(self._loop.time(), timeout_at) + STREAM_FLUSH_S)


async def _report_drain(parts: Parts) -> None:
    outcomes = parts.pool.recorded_while_draining
    log.info(
        "drained: %d attempts ended during shutdown%s%s",
        len(outcomes),
        ": " if outcomes else "",
        ", ".join(f"{e.job_id}#{e.attempt} {e.type.value}" for e in outcomes),
        extra={"action": "shutdown_outcomes"},
    )
    unfinished = await parts.store.unfinished_job_ids()
    if unfinished and parts.config.store_kind == "memory":
        log.warning(
            "exiting with %d unfinished jobs, lost with the memory store: %s",
            len(unfinished),
            " ".join(unfinished),
            extra={"action": "shutdown_unfinished"},
        )
    elif unfinished:
        log.info(
            "%d unfinished jobs stay in the store and resume on the next start",
            len(unfinished),
            extra={"action": "shutdown_unfinished"},
        )
    log.info("worker pool stopped", extra={"action": "shutdown_drained"})


def relay_signals(app: App) -> None:
    """main_process_ready (manager mode, main process): count signals where they are counted
    once. The first is Sanic's graceful stop (a SIGINT relayed to each worker); a later one is
    relayed as SIGTERM, which the worker takes as "stop waiting", instead of Sanic's SIGKILL to
    the process group, which kills main, the worker and whatever shares the group, unrecorded."""
    manager = app.manager
    signalled = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signalled
        if not signalled:
            signalled = True
            log.info("main process received %s: stopping the worker", signal.Signals(signum).name)
            manager.monitor_publisher.send(None)  # what Sanic's own handler does, minus the kill
            manager.shutdown()  # type: ignore[no-untyped-call]
            return
        log.warning("main process received %s again: relaying it to the worker", signal.Signals(signum).name)
        for process in manager.processes:
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    for sig in _SIGNALS:
        signal.signal(sig, on_signal)
