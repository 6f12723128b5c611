"""The worker pool: WORKERS asyncio tasks that claim ready jobs and record each outcome.

Idle workers park on a future and are woken one at a time by the events that
make work ready (an enqueue, a requeue, an interruption, or a retry's delay
running out), so a waiting job starts within one loop iteration, and an idle
pool costs nothing. A failed attempt schedules its retry on a timer and frees
its worker at once.

Batched claims. A worker claims for itself and for every parked worker in
one `claim_ready` (one query, one commit), and hands the extra jobs to the
parked ones. On a store whose writes share commits (`batches_commits`), a
worker sends its next claim together with its outcome, so both ride one
commit instead of one commit each. A job claimed but not yet run when the pool
stops is recorded `interrupted` (reason "shutdown"), like a cut-off attempt.
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
from domain.states import ATTEMPT_OUTCOMES, EventType
from domain.text import describe_error
from service.clock import now_ms
from service.store.base import EventStore, SharedStore
from service.store.faults import PROBE_BACKOFF, StoreUnavailable

log = logging.getLogger("kasp.pool")

#: A worker that dies sooner than this after it started is replaced this much later, not at once:
#: a guess, the same pause a failing claim takes before it tries again.
REPLACE_BACKOFF_S = 1.0

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
        self._parked = 0  # workers waiting in _wait_for_work
        self._missed_wake = False  # work was made ready while no worker was parked
        self._claimed: deque[JobView] = deque()  # claimed (recorded `started`) for a worker, not yet run
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._stop = asyncio.Event()  # set once stop() begins
        self._stop_deadline = 0.0  # monotonic: until when an outcome may wait for the store
        self._running: set[str] = set()  # ids of jobs whose attempt this pool runs
        self._in_processor: set[asyncio.Task[None]] = set()  # workers inside user code
        self._lease_task: asyncio.Task[None] | None = None
        self._spawned = 0  # workers started so far, replacements included: names them
        self._born: dict[asyncio.Task[None], float] = {}  # worker -> time.monotonic() it started
        self._respawns: set[asyncio.TimerHandle] = set()
        self._cut: dict[asyncio.Task[None], str] = {}  # worker -> why the pool cancelled its attempt
        self.busy = 0
        self.recorded_while_draining: list[Event] = []  #: outcomes recorded after stop() began

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self._store.add_listener(self._on_event)
        self._store.health.add_listener(self._on_store_health)
        for _ in range(self.size):
            self._spawn_worker()
        if isinstance(self._store, SharedStore):
            self._store.add_remote_listener(self._on_remote_event)
            self._lease_task = asyncio.create_task(self._keep_leases(self._store), name="kasp-leases")

    async def stop(self, *, timeout_s: float, force: asyncio.Event | None = None) -> None:
        """Stop claiming; let running attempts finish for `timeout_s`, then interrupt the rest.

        `force` (set by a second signal) ends the wait early.
        """
        loop = asyncio.get_running_loop()
        began = loop.time()
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
            forced = force is not None and force.is_set()
            log.warning(
                "%d attempts still running %.1f s into the shutdown (%s); interrupting them",
                len(interrupted),
                loop.time() - began,
                "a second signal forced the stop"
                if forced
                else f"SHUTDOWN_TIMEOUT of {timeout_s:g} s reached",
                extra={"action": "pool_interrupt"},
            )
            for task in interrupted:
                self._cut_attempt(task, "shutdown")
        still_running = [t for t in self._tasks if not t.done()]
        if still_running:
            await asyncio.wait(still_running, timeout=10)  # recording `interrupted` is quick
        self._tasks = []
        if self._lease_task is not None:  # only now: attempts kept their leases while finishing
            self._lease_task.cancel()
            await asyncio.wait([self._lease_task], timeout=10)
            self._lease_task = None

    # -- supervision -------------------------------------------------------

    @property
    def live_workers(self) -> int:
        """Worker tasks alive now: what /stats and /readyz report, not the configured size."""
        return sum(1 for task in self._tasks if not task.done())

    def worker_tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    def _spawn_worker(self) -> None:
        self._spawned += 1
        task = asyncio.create_task(self._work(), name=f"kasp-worker-{self._spawned}")
        self._born[task] = time.monotonic()
        task.add_done_callback(self._on_worker_done)
        self._tasks.append(task)

    def _on_worker_done(self, task: asyncio.Task[None]) -> None:
        """A worker only ends when stop() asks; any other end is logged and the worker replaced."""
        lived_s = time.monotonic() - self._born.pop(task, 0.0)
        error = None if task.cancelled() else task.exception()  # retrieved either way: no asyncio warning
        if task in self._tasks:
            self._tasks.remove(task)
        if self._stop.is_set():
            return
        log.error(
            "worker %s ended unexpectedly (%s); replacing it",
            task.get_name(),
            "cancelled" if task.cancelled() else f"{type(error).__name__}: {error}" if error else "returned",
            exc_info=error,
            extra={"action": "worker_replaced"},
        )
        if lived_s >= REPLACE_BACKOFF_S:
            self._spawn_worker()
            return
        # Died at once: something fails on every claim. Replace it, but not in a hot loop
        # (`live_workers` and /readyz show the gap meanwhile).
        handle = asyncio.get_running_loop().call_later(REPLACE_BACKOFF_S, self._respawn)
        self._respawns.add(handle)

    def _respawn(self) -> None:
        self._respawns = {h for h in self._respawns if not h.cancelled()}
        if not self._stop.is_set():
            self._spawn_worker()

    def _cut_attempt(self, worker: asyncio.Task[None], reason: str) -> None:
        """The one way an attempt is cancelled: the pool records why before it cancels."""
        self._cut[worker] = reason
        worker.cancel()

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
        self._missed_wake = True  # every worker is busy or claiming: the next to park claims again

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
        if self._missed_wake:  # something became ready while this worker was claiming
            self._missed_wake = False
            return
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
        self._parked += 1
        try:
            await fut
        finally:
            self._parked -= 1
            if handle is not None:
                handle.cancel()

    # -- working -----------------------------------------------------------

    async def _work(self) -> None:
        claimed = self._claimed
        probes = 0  # failed claims in a row while the store is unavailable
        try:
            while not self._stop.is_set():
                if claimed:
                    view = claimed.popleft()
                else:
                    try:
                        # One claim for this worker and every parked one (one query, one commit).
                        views = await self._store.claim_ready(at_ms=now_ms(), limit=1 + self._parked)
                        probes = 0
                        if not views:
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
                    view = views[0]
                    for extra in views[1:]:
                        claimed.append(extra)
                        self._wake_one()
                if self._stop.is_set():  # claimed while shutdown began (a store claim can wait)
                    claimed.appendleft(view)
                    break
                self.busy += 1
                self._running.add(view.id)
                try:
                    await self._attempt(view)
                except Exception:
                    log.exception(
                        "recording the outcome of %r failed", view.id, extra={"action": "record_error"}
                    )
                finally:
                    self._running.discard(view.id)
                    self.busy -= 1
        finally:
            if self._stop.is_set():  # otherwise the jobs stay claimed for the other workers
                await self._release_claimed()

    async def _release_claimed(self) -> None:
        """Jobs claimed for workers that will not run them now: `interrupted`, so they run again."""
        while self._claimed:
            view = self._claimed.popleft()
            await self._record(job.interrupt(view, at_ms=now_ms(), reason="shutdown"))

    async def _attempt(self, view: JobView) -> None:
        attempt = Attempt(view.id, view.payload, view.attempts, view.max_retries)
        began = time.monotonic()
        worker = asyncio.current_task()
        assert worker is not None
        self._in_processor.add(worker)
        try:
            await self._processor(attempt)
        except BaseException as exc:  # whatever a processor raises fails its attempt (SPEC Faults)
            self._in_processor.discard(worker)
            if worker.cancelling():
                # The worker itself is being cancelled (by stop(), or, against every rule,
                # from outside): the attempt was cut off, it did not fail. A CancelledError
                # the processor raised, or got from a task it awaited, cancels nothing.
                reason = self._cut.pop(worker, "shutdown")
                event = job.interrupt(view, at_ms=now_ms(), reason=reason, duration_ms=_since(began))
                await self._record(event)
                raise
            log.debug("attempt %d of %r failed: %r", view.attempts, view.id, exc)
            event = job.fail(
                view,
                error=describe_error(exc),
                at_ms=now_ms(),
                duration_ms=_since(began),
                policy=self._backoff,
                rng=self._rng,
            )
        else:
            event = job.succeed(view, at_ms=now_ms(), duration_ms=_since(began))
        finally:
            self._in_processor.discard(worker)
            self._cut.pop(worker, None)
        await self._record(event)

    async def _record(self, event: Event) -> None:
        """Write an attempt's outcome. Through a store outage it is kept and written again
        until it is on disk or the job moved on; on shutdown, until the drain's deadline."""
        probes = 0
        while True:
            try:
                if self._store.batches_commits and event.type in ATTEMPT_OUTCOMES and not self._stop.is_set():
                    await self._record_and_claim(event)
                else:
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

    async def _record_and_claim(self, event: Event) -> None:
        """Send the outcome and this worker's next claim together: both ride one commit."""
        appended, claimed = await asyncio.gather(
            self._store.append(event), self._store.claim_ready(at_ms=now_ms()), return_exceptions=True
        )
        if isinstance(claimed, list):
            self._claimed.extend(claimed)  # this worker's next job: _work takes it first
        elif not isinstance(claimed, StoreUnavailable):  # an outage is the health record's to log
            log.error("claiming a job failed", exc_info=claimed, extra={"action": "claim_error"})
        if isinstance(appended, BaseException):
            raise appended

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
