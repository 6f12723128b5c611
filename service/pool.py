"""The worker pool: WORKERS asyncio tasks that claim ready jobs and record each outcome.

Idle workers park on a future and are woken one at a time by the events that
make work ready (an enqueue, a requeue, an interruption), so a waiting job
starts within one loop iteration, and an idle pool costs nothing. Jobs that
become ready later (a retry's delay, a schedule) share ONE timer, set for the
earliest due time the pool knows of: a million scheduled jobs cost no timer
each, and no CPU while they wait.

Batched claims. A worker claims for itself and for every parked worker in
one `claim_ready` (one query, one commit), and hands the extra jobs to the
parked ones. On a store whose writes share commits (`batches_commits`), a
worker sends its next claim together with its outcome, so both ride one
commit instead of one commit each. A job claimed but not yet run when the pool
stops is recorded `interrupted` (reason "shutdown"), like a cut-off attempt;
one cancelled before it ran is dropped (its `cancelled` is recorded).

Attempts. The processor runs inside the worker's own task, with a deadline
(the job's `timeout_ms`, else ATTEMPT_TIMEOUT_MS; one timer serves every
running attempt). The pool cuts an attempt short, with asyncio cancellation,
for one of three reasons: its timeout (recorded as a failed attempt, reason
`timeout`), a `cancelled` event for its job (already recorded by whoever
cancelled it), or shutdown (`interrupted`). A processor that swallows the
CancelledError and goes on is given ABANDON_GRACE_S; then its task is abandoned
(cancelled once more and left to end on its own, logged), the attempt's outcome
is recorded for it, and a fresh worker takes its place: the pool never loses a
worker to a processor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

from domain import job
from domain.backoff import Backoff, RandomSource
from domain.errors import InvalidResult, VersionConflict
from domain.events import Event, parse_ts
from domain.processor import Attempt, Processor
from domain.projection import JobView
from domain.states import ATTEMPT_OUTCOMES, EventType, JobState
from domain.text import describe_error
from service.clock import now_ms
from service.store.base import EventStore, SharedStore
from service.store.faults import PROBE_BACKOFF, StoreUnavailable

log = logging.getLogger("kasp.pool")

#: A worker that dies sooner than this after it started is replaced this much later, not at once:
#: a guess, the same pause a failing claim takes before it tries again.
REPLACE_BACKOFF_S = 1.0

_WAKES_WORK = frozenset({EventType.ENQUEUED, EventType.REQUEUED, EventType.INTERRUPTED})
#: Events the pool's listener ignores: everything but the above, a retry and a cancel.
_QUIET = frozenset(EventType) - _WAKES_WORK - {EventType.RETRY_SCHEDULED, EventType.CANCELLED}

#: A guess: how long a cut-off processor gets to end after its CancelledError before its
#: task is abandoned. Well under SPEC's 2 s for a cancel, long enough for a `finally` to
#: close a connection.
ABANDON_GRACE_S = 1.0

#: A guess: at shutdown, how long interrupted attempts get to record their outcome.
STOP_RECORD_WAIT_S = 10.0

#: Why the pool cut an attempt short (see the module docstring).
CutReason = Literal["timeout", "cancelled", "shutdown"]


@dataclass(slots=True, eq=False)
class _Running:
    """One attempt inside the processor: what a cut needs to know about it."""

    view: JobView  #: the running view, as claimed
    worker: asyncio.Task[None]
    began: float  #: time.monotonic() when the processor was called
    timeout_ms: int  #: 0: no limit
    deadline: float  #: loop time at which it times out (inf: never)
    cut: CutReason | None = None  #: set once, by the first cut
    abandoned: bool = False


class WorkerPool:
    def __init__(
        self,
        store: EventStore,
        processor: Processor,
        *,
        size: int,
        backoff: Backoff,
        attempt_timeout_ms: int,
        rng: RandomSource | None = None,
    ) -> None:
        self._store = store
        self._processor = processor
        self.size = size
        self._backoff = backoff
        self._attempt_timeout_ms = attempt_timeout_ms
        self._rng = rng if rng is not None else random.Random()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._parked = 0  # workers waiting in _wait_for_work
        self._missed_wake = False  # work was made ready while no worker was parked
        self._claimed: deque[JobView] = deque()  # claimed (recorded `started`) for a worker, not yet run
        self._tasks: list[asyncio.Task[None]] = []
        self._due_timer: asyncio.TimerHandle | None = None  # the one wake-up for delayed work
        self._due_ms: int | None = None  # when it fires
        self._stop = asyncio.Event()  # set once stop() begins
        self._stop_deadline = 0.0  # monotonic: until when an outcome may wait for the store
        self._running: set[str] = set()  # ids of jobs whose attempt this pool runs
        self._attempts: dict[str, _Running] = {}  # job id -> its attempt inside the processor
        self._deadline_timer: asyncio.TimerHandle | None = None  # the one timer for every timeout
        self._deadline_at = math.inf  # loop time it fires at
        self._abandoned: set[asyncio.Task[None]] = set()  # workers left inside a stuck processor
        self._chores: set[asyncio.Task[None]] = set()  # outcomes recorded for abandoned attempts
        self._lease_task: asyncio.Task[None] | None = None
        self._spawned = 0  # workers started so far, replacements included: names them
        self._born: dict[asyncio.Task[None], float] = {}  # worker -> time.monotonic() it started
        self._respawns: set[asyncio.TimerHandle] = set()
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
        if self._due_timer is not None:
            self._due_timer.cancel()
            self._due_timer = self._due_ms = None
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
        interrupted = list(self._attempts.values())
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
            for running in interrupted:
                self._cut(running, "shutdown")
        # Recording `interrupted` is quick; a processor that ignores its cancellation is
        # abandoned after ABANDON_GRACE_S (and its outcome recorded by a chore), so look again.
        loop = asyncio.get_running_loop()
        give_up = loop.time() + STOP_RECORD_WAIT_S
        while still_running := [t for t in (*self._tasks, *self._chores) if not t.done()]:
            if loop.time() >= give_up:
                break
            await asyncio.wait(still_running, timeout=min(ABANDON_GRACE_S, give_up - loop.time()))
        self._tasks = []
        if self._deadline_timer is not None:  # timeouts held during the drain; nothing runs now
            self._deadline_timer.cancel()
            self._deadline_timer = None
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
        if task in self._abandoned:  # left in a stuck processor: replaced when it was abandoned
            self._abandoned.discard(task)
            return
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

    async def _keep_leases(self, store: SharedStore) -> None:
        """Renew this pool's leases and recover other instances' expired ones, every lease/3."""
        interval_s = store.lease_s / 3  # two renewals may fail before a lease expires
        while True:
            try:
                if self._running:
                    held = await store.renew_leases(list(self._running))
                    if held < len(self._running) and self._attempts:
                        # Some job is no longer ours to run: perhaps cancelled, its
                        # notification lost with a dropped LISTEN connection.
                        for job_id in list(self._attempts):
                            await self._on_remote_cancel(job_id)
                if not self._stop.is_set():
                    await store.recover_expired()
            except StoreUnavailable:
                pass  # logged once per outage by the store's health record; try again next round
            except Exception:
                log.exception("renewing or recovering leases failed", extra={"action": "lease_error"})
            await asyncio.sleep(interval_s)

    # -- waking ------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        type_ = event.type
        if type_ in _QUIET:  # most events (started, succeeded, ...) need nothing: one set lookup
            return
        if type_ is EventType.ENQUEUED:
            run_at = event.data.get("run_at")
            due_ms = parse_ts(run_at) if run_at is not None else None
            if due_ms is not None and due_ms > event.at_ms:
                self._wake_at(due_ms)  # scheduled: nothing to do before its time
            else:
                self._wake_one()
        elif type_ in _WAKES_WORK:
            self._wake_one()
        elif type_ is EventType.RETRY_SCHEDULED:
            self._wake_at(event.at_ms + event.data["delay_ms"])
        elif type_ is EventType.CANCELLED and event.from_state is JobState.RUNNING:
            running = self._attempts.get(event.job_id)
            if running is not None and running.view.attempts == event.attempt:
                self._cut(running, "cancelled")
            elif self._claimed:
                self._drop_claimed(event.job_id, event.attempt)

    def _drop_claimed(self, job_id: str, attempt: int | None) -> None:
        """A job claimed for a worker but not run yet was cancelled: nothing is left to run."""
        for view in self._claimed:
            if view.id == job_id and (attempt is None or view.attempts == attempt):
                self._claimed.remove(view)
                return

    def _on_store_health(self, available: bool) -> None:
        """The store went down: wake one idle worker, whose claims then probe it (with
        backoff) until it is back, even if nothing else would write to it."""
        if not available:
            self._wake_one()

    def _on_remote_event(self, type_: EventType, due_ms: int | None, job_id: str) -> None:
        """Another instance committed an event: wake a worker as if it were ours, or, for a
        `cancelled`, cancel the attempt of that job this pool runs."""
        if type_ is EventType.ENQUEUED and due_ms is not None and due_ms > now_ms():
            self._wake_at(due_ms)  # scheduled: nothing to do before its time
        elif type_ in _WAKES_WORK:
            self._wake_one()
        elif type_ is EventType.RETRY_SCHEDULED and due_ms is not None:
            self._wake_at(due_ms)
        elif type_ is EventType.CANCELLED and (job_id in self._attempts or self._claimed):
            chore = asyncio.create_task(self._on_remote_cancel(job_id), name=f"kasp-cancel-{job_id}")
            self._chores.add(chore)
            chore.add_done_callback(self._chores.discard)

    async def _on_remote_cancel(self, job_id: str) -> None:
        """The notification names the job, not the attempt: read the job, so a late notice
        of an earlier cancel never cuts a later attempt (one query, only for our own jobs)."""
        try:
            view = await self._store.get_job(job_id)
        except Exception:
            log.exception("reading cancelled job %r failed", job_id, extra={"action": "cancel_error"})
            return
        if view is None or view.state is not JobState.CANCELLED or view.attempts == 0:
            return
        running = self._attempts.get(job_id)
        if running is not None and running.view.attempts == view.attempts:
            self._cut(running, "cancelled")
        elif self._claimed:
            self._drop_claimed(job_id, view.attempts)

    def _wake_one(self) -> None:
        idle = self._idle
        while idle:
            fut = idle.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._missed_wake = True  # every worker is busy or claiming: the next to park claims again

    def _wake_at(self, due_ms: int) -> None:
        """Make sure a worker wakes by `due_ms`: moves the one timer earlier, never adds one.

        A later due time needs nothing: a worker that parks reads the store's
        earliest due time (`next_due_ms`) and sets the timer again."""
        if self._stop.is_set() or (self._due_ms is not None and self._due_ms <= due_ms):
            return
        if self._due_timer is not None:
            self._due_timer.cancel()
        delay_s = max(0.0, (due_ms - now_ms()) / 1000)
        self._due_ms = due_ms
        self._due_timer = asyncio.get_running_loop().call_later(delay_s, self._on_due)

    def _on_due(self) -> None:
        self._due_timer = self._due_ms = None
        self._wake_one()

    async def _wait_for_work(self) -> None:
        if self._missed_wake:  # something became ready while this worker was claiming
            self._missed_wake = False
            return
        if self._stop.is_set():
            # stop() woke the parked workers before this one came back from its claim: parked
            # now, nobody would wake it, and the drain would wait SHUTDOWN_TIMEOUT and then
            # STOP_RECORD_WAIT_S for it (seen: 15 s test-server stops on SQLite).
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
            self._wake_at(due)
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
        # Once per worker, not per attempt: asyncio.current_task() is Python code in 3.11,
        # ~2% of the no-HTTP engine benchmark when asked per job (Issue 9).
        worker = asyncio.current_task()
        assert worker is not None
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
                running = None
                try:
                    running = await self._attempt(view, worker)
                except Exception:
                    log.exception(
                        "recording the outcome of %r failed", view.id, extra={"action": "record_error"}
                    )
                finally:
                    if running is None or not running.abandoned:  # an abandoned one was let go already
                        self._running.discard(view.id)
                        self.busy -= 1
                if running is not None and running.abandoned:
                    return  # a fresh worker took this one's place
        finally:
            if self._stop.is_set():  # otherwise the jobs stay claimed for the other workers
                await self._release_claimed()

    async def _release_claimed(self) -> None:
        """Jobs claimed for workers that will not run them now: `interrupted`, so they run again."""
        while self._claimed:
            view = self._claimed.popleft()
            await self._record(job.interrupt(view, at_ms=now_ms(), reason="shutdown"))

    async def _attempt(self, view: JobView, worker: asyncio.Task[None]) -> _Running:
        """Run the processor for `view`'s attempt in `worker` (the task running this) and record
        its outcome (see the module docstring)."""
        timeout_ms = view.timeout_ms if view.timeout_ms is not None else self._attempt_timeout_ms
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000 if timeout_ms else math.inf
        running = _Running(view, worker, time.monotonic(), timeout_ms, deadline)
        if deadline < self._deadline_at:  # rarely: a shorter timeout than every running one's
            self._set_deadline_timer(loop, deadline)
        self._attempts[view.id] = running
        try:
            result = await self._processor(Attempt(view.id, view.payload, view.attempts, view.max_retries))
        except BaseException as exc:  # whatever a processor raises fails its attempt (SPEC Faults)
            self._end(running)
            if running.cut is None and worker.cancelling():
                running.cut = "shutdown"  # the worker itself is cancelled, from outside the pool
            if running.cut is None:
                # Not cut by the pool: a CancelledError the processor raised, or got from
                # a task it awaited, is a failure like any other.
                await self._record_failure(running, exc)
                return running
            if running.cut == "shutdown" and not running.abandoned:
                await self._record(self._outcome(running))
                raise
        else:
            self._end(running)
            if running.cut is None:
                # Inline, not a helper coroutine: this is the hot path (one per job).
                duration_ms = _since(running.began)
                try:
                    event = job.succeed(view, at_ms=now_ms(), duration_ms=duration_ms, result=result)
                except InvalidResult as exc:  # not JSON, or over 64 KiB: the attempt failed
                    event = self._failure(view, str(exc), duration_ms, reason="error")
                await self._record(event)
                return running
        # Cut by the pool (timeout or cancel) and the processor is over: the worker goes on.
        worker.uncancel()
        if running.abandoned:
            log.info(
                "the abandoned attempt %d of %r ended at last",
                view.attempts,
                view.id,
                extra={"action": "abandoned_ended"},
            )
        else:
            await self._record_cut(running)
        return running

    def _end(self, running: _Running) -> None:
        """The processor returned or raised: no more cuts."""
        if self._attempts.get(running.view.id) is running:
            del self._attempts[running.view.id]

    # Timeouts share ONE timer, set for the earliest deadline among running attempts:
    # a timer per attempt (create, then cancel) cost ~14 µs under uvloop, a third of
    # a no-op job's whole cost in the engine benchmark. An attempt that starts adds
    # nothing unless its deadline is the earliest; when the timer fires, it cuts the
    # attempts past their deadline and is set again from those still running (at most
    # WORKERS), so every deadline is kept to the timer's precision.

    def _set_deadline_timer(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_at = at
        self._deadline_timer = loop.call_at(at, self._on_deadline)

    def _on_deadline(self) -> None:
        loop = asyncio.get_running_loop()
        self._deadline_timer, self._deadline_at = None, math.inf
        now, earliest = loop.time(), math.inf
        for running in list(self._attempts.values()):
            if running.deadline <= now:
                self._cut(running, "timeout")
            elif running.cut is None:
                earliest = min(earliest, running.deadline)
        if earliest < math.inf:
            self._set_deadline_timer(loop, earliest)

    def _cut(self, running: _Running, reason: CutReason) -> None:
        """The one way the pool cuts an attempt short: it says why, then cancels the worker
        (inside the processor); ABANDON_GRACE_S later, a worker still there is abandoned."""
        if running.cut is not None or self._attempts.get(running.view.id) is not running:
            return  # cut already, or over
        running.cut = reason
        running.worker.cancel()
        asyncio.get_running_loop().call_later(ABANDON_GRACE_S, self._abandon_if_stuck, running)

    def _abandon_if_stuck(self, running: _Running) -> None:
        if self._attempts.get(running.view.id) is not running:
            return  # it ended within the grace period
        del self._attempts[running.view.id]
        worker = running.worker
        running.abandoned = True
        log.warning(
            "attempt %d of %r ignored its cancellation (%s) for %.1f s: abandoning its task %s "
            "and replacing the worker",
            running.view.attempts,
            running.view.id,
            running.cut,
            ABANDON_GRACE_S,
            worker.get_name(),
            extra={"action": "attempt_abandoned"},
        )
        worker.cancel()  # once more: a processor that swallowed one cancellation may heed this one
        if worker in self._tasks:
            self._tasks.remove(worker)
        self._abandoned.add(worker)  # _on_worker_done lets it go when it ends at last
        self._running.discard(running.view.id)
        self.busy -= 1
        chore = asyncio.create_task(self._record_abandoned(running), name=f"kasp-record-{running.view.id}")
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)
        if not self._stop.is_set():
            self._spawn_worker()

    async def _record_abandoned(self, running: _Running) -> None:
        await self._record_cut(running)
        if self._claimed:  # the write may have brought a next claim (batched): hand it on
            self._wake_one()

    async def _record_cut(self, running: _Running) -> None:
        if running.cut == "cancelled":
            return  # `cancelled` is recorded already: by whoever cancelled the job
        await self._record(self._outcome(running))

    def _outcome(self, running: _Running) -> Event:
        """The event that ends an attempt the pool cut for its timeout or for shutdown."""
        view, duration_ms = running.view, _since(running.began)
        if running.cut == "timeout":
            error = f"the attempt ran over its timeout of {running.timeout_ms} ms and was cancelled"
            return self._failure(view, error, duration_ms, reason="timeout")
        return job.interrupt(view, at_ms=now_ms(), reason="shutdown", duration_ms=duration_ms)

    async def _record_failure(self, running: _Running, exc: BaseException) -> None:
        view = running.view
        log.debug("attempt %d of %r failed: %r", view.attempts, view.id, exc)
        error = describe_error(exc)
        await self._record(self._failure(view, error, _since(running.began), reason="error"))

    def _failure(self, view: JobView, error: str, duration_ms: int, *, reason: job.FailureReason) -> Event:
        return job.fail(
            view,
            error=error,
            at_ms=now_ms(),
            duration_ms=duration_ms,
            policy=self._backoff,
            rng=self._rng,
            reason=reason,
        )

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
                    "outcome of attempt %s of %r dropped: the job moved on (cancelled, or its lease lost)",
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
