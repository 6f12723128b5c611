"""The worker pool: WORKERS asyncio tasks that claim ready jobs and record each outcome.

Idle workers park on a future and are woken one at a time by the events that
make work ready (an enqueue, a requeue, an interruption, or a retry's delay
running out), so a waiting job starts within one loop iteration, and an idle
pool costs nothing. A failed attempt schedules its retry on a timer and frees
its worker at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque

from domain import job
from domain.backoff import Backoff, RandomSource
from domain.errors import VersionConflict
from domain.events import Event
from domain.processor import Attempt, Processor
from domain.projection import JobView
from domain.states import EventType
from service.clock import now_ms
from service.store.base import EventStore, SharedStore
from service.store.faults import PROBE_BACKOFF, StoreUnavailable

log = logging.getLogger("kasp.pool")

_WAKES_WORK = frozenset({EventType.ENQUEUED, EventType.REQUEUED, EventType.INTERRUPTED})


class WorkerPool:
    def __init__(
        self,
        store: EventStore,
        processor: Processor,
        *,
        size: int,
        backoff: Backoff,
        rng: RandomSource | None = None,
    ) -> None:
        self._store = store
        self._processor = processor
        self.size = size
        self._backoff = backoff
        self._rng = rng if rng is not None else random.Random()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._stop = asyncio.Event()  # set once stop() begins
        self._stop_deadline = 0.0  # monotonic: until when an outcome may wait for the store
        self._running: set[str] = set()  # ids of jobs whose attempt this pool runs
        self._in_processor: set[asyncio.Task[None]] = set()  # workers inside user code
        self._lease_task: asyncio.Task[None] | None = None
        self.busy = 0
        self.recorded_while_draining: list[Event] = []  #: outcomes recorded after stop() began

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self._store.add_listener(self._on_event)
        self._store.health.add_listener(self._on_store_health)
        self._tasks = [asyncio.create_task(self._work(), name=f"kasp-worker-{i}") for i in range(self.size)]
        if isinstance(self._store, SharedStore):
            self._store.add_remote_listener(self._on_remote_event)
            self._lease_task = asyncio.create_task(self._keep_leases(self._store), name="kasp-leases")

    async def stop(self, *, timeout_s: float, force: asyncio.Event | None = None) -> None:
        """Stop claiming; let running attempts finish for `timeout_s`, then interrupt the rest.

        `force` (set by a second signal) ends the wait early.
        """
        self._stop_deadline = time.monotonic() + timeout_s
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        while self._idle:
            fut = self._idle.popleft()
            if not fut.done():
                fut.set_result(None)
        pending = {t for t in self._tasks if not t.done()}
        if pending:
            waiters: set[asyncio.Future[object]] = {asyncio.ensure_future(asyncio.wait(pending))}
            if force is not None:
                waiters.add(asyncio.ensure_future(force.wait()))
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
        # Only a worker inside the processor is cancelled: one that is claiming or
        # recording finishes that store write (cutting it would leave a job running
        # until its lease expires), sees `_stopping` and leaves. So store writes need
        # no asyncio.shield, which cost a Task per job (docs/PERFORMANCE.md).
        interrupted = list(self._in_processor)
        if interrupted:
            log.warning(
                "%d attempts still running after %.1f s; interrupting them",
                len(interrupted),
                timeout_s,
                extra={"action": "pool_interrupt"},
            )
            for task in interrupted:
                task.cancel()
        still_running = [t for t in self._tasks if not t.done()]
        if still_running:
            await asyncio.wait(still_running, timeout=10)  # recording `interrupted` is quick
        self._tasks = []
        if self._lease_task is not None:  # only now: attempts kept their leases while finishing
            self._lease_task.cancel()
            await asyncio.wait([self._lease_task], timeout=10)
            self._lease_task = None

    async def _keep_leases(self, store: SharedStore) -> None:
        """Renew this pool's leases and recover other instances' expired ones, every lease/3."""
        interval_s = store.lease_s / 3  # two renewals may fail before a lease expires
        while True:
            try:
                if self._running:
                    await store.renew_leases(list(self._running))
                if not self._stop.is_set():
                    await store.recover_expired()
            except StoreUnavailable:
                pass  # logged once per outage by the store's health record; try again next round
            except Exception:
                log.exception("renewing or recovering leases failed", extra={"action": "lease_error"})
            await asyncio.sleep(interval_s)

    # -- waking ------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.type in _WAKES_WORK:
            self._wake_one()
        elif event.type is EventType.RETRY_SCHEDULED:
            self._wake_at(event.at_ms + event.data["delay_ms"])

    def _on_store_health(self, available: bool) -> None:
        """The store went down: wake one idle worker, whose claims then probe it (with
        backoff) until it is back, even if nothing else would write to it."""
        if not available:
            self._wake_one()

    def _on_remote_event(self, type_: EventType, due_ms: int | None) -> None:
        """Another instance committed an event: wake a worker as if it were ours."""
        if type_ in _WAKES_WORK:
            self._wake_one()
        elif type_ is EventType.RETRY_SCHEDULED and due_ms is not None:
            self._wake_at(due_ms)

    def _wake_one(self) -> None:
        idle = self._idle
        while idle:
            fut = idle.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _wake_at(self, due_ms: int) -> None:
        if self._stop.is_set():
            return
        loop = asyncio.get_running_loop()
        delay_s = max(0.0, (due_ms - now_ms()) / 1000)
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(timer)
            self._wake_one()

        timer = loop.call_later(delay_s, fire)
        self._timers.add(timer)

    async def _wait_for_work(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._idle.append(fut)
        timeout = self._store.poll_interval_s
        try:
            due = await self._store.next_due_ms()
        except BaseException:
            with contextlib.suppress(ValueError):  # not waiting after all: wake someone else
                self._idle.remove(fut)
            raise
        if due is not None:
            until_due = max(0.0, (due - now_ms()) / 1000)
            timeout = until_due if timeout is None else min(timeout, until_due)
        handle = loop.call_later(timeout, _resolve, fut) if timeout is not None else None
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()

    # -- working -----------------------------------------------------------

    async def _work(self) -> None:
        probes = 0  # failed claims in a row while the store is unavailable
        while not self._stop.is_set():
            try:
                view = await self._store.claim_ready(at_ms=now_ms())
                probes = 0
                if view is None:
                    await self._wait_for_work()
                    continue
            except StoreUnavailable:
                probes += 1  # stop claiming: each claim is now a probe, ever less often
                await self._wait_for_store(probes)
                continue
            except Exception:
                log.exception("claiming a job failed", extra={"action": "claim_error"})
                await asyncio.sleep(1)  # a failing store: don't spin
                continue
            if self._stop.is_set():  # claimed while shutdown began (a store claim can wait)
                await self._record(job.interrupt(view, at_ms=now_ms(), reason="shutdown"))
                break
            self.busy += 1
            self._running.add(view.id)
            try:
                await self._attempt(view)
            except Exception:
                log.exception("recording the outcome of %r failed", view.id, extra={"action": "record_error"})
            finally:
                self._running.discard(view.id)
                self.busy -= 1

    async def _attempt(self, view: JobView) -> None:
        attempt = Attempt(view.id, view.payload, view.attempts, view.max_retries)
        began = time.monotonic()
        worker = asyncio.current_task()
        assert worker is not None
        self._in_processor.add(worker)
        try:
            await self._processor(attempt)
        except asyncio.CancelledError:
            self._in_processor.discard(worker)
            event = job.interrupt(view, at_ms=now_ms(), reason="shutdown", duration_ms=_since(began))
            await self._record(event)
            raise
        except Exception as exc:
            log.debug("attempt %d of %r failed: %r", view.attempts, view.id, exc)
            event = job.fail(
                view,
                error=str(exc) or type(exc).__name__,
                at_ms=now_ms(),
                duration_ms=_since(began),
                policy=self._backoff,
                rng=self._rng,
            )
        else:
            event = job.succeed(view, at_ms=now_ms(), duration_ms=_since(began))
        finally:
            self._in_processor.discard(worker)
        await self._record(event)

    async def _record(self, event: Event) -> None:
        """Write an attempt's outcome. Through a store outage it is kept and written again
        until it is on disk or the job moved on; on shutdown, until the drain's deadline."""
        probes = 0
        while True:
            try:
                await self._store.append(event)  # never cancelled: see stop()
            except VersionConflict:
                log.warning(
                    "outcome of attempt %s of %r dropped: the job moved on (lease lost?)",
                    event.attempt,
                    event.job_id,
                    extra={"action": "outcome_dropped"},
                )
                return
            except StoreUnavailable:
                if self._stop.is_set() and time.monotonic() >= self._stop_deadline:
                    log.error(
                        "outcome %s of attempt %s of %r could not be written (the store is unavailable); "
                        "the job stays running in the store and runs again after recovery",
                        event.type.value,
                        event.attempt,
                        event.job_id,
                        extra={"action": "outcome_unwritten"},
                    )
                    return
                probes += 1
                await self._wait_for_store(probes)
                continue
            if self._stop.is_set():
                self.recorded_while_draining.append(event)
            return

    async def _wait_for_store(self, probes: int) -> None:
        """Back off before probe number `probes + 1` of an unavailable store (faults.PROBE_BACKOFF);
        a shutdown ends the wait of an idle worker at once."""
        delay_s = PROBE_BACKOFF.delay_ms(probes, self._rng) / 1000
        if self._stop.is_set():
            delay_s = min(delay_s, max(0.0, self._stop_deadline - time.monotonic()))
            await asyncio.sleep(delay_s)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay_s)


def _since(began: float) -> int:
    return int((time.monotonic() - began) * 1000)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
