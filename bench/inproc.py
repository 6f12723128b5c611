"""In-process scenarios: kasp's engine, store and pool driven without HTTP.

Run one scenario per process (`python -m bench.inproc SCENARIO ...`), so each
measurement starts from a fresh heap; it prints one JSON line. bench/run.py
runs these in alternation with their baselines and reports medians.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from bench.baselines.shared_machine import BareQueue
from domain.events import Event
from domain.processor import Attempt, Processor, SimulatedProcessor
from domain.states import EventType
from service.clock import now_ms
from service.config import Config
from service.engine import JobRequest
from service.parts import Parts, build_parts

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_FINISHING = frozenset({EventType.SUCCEEDED, EventType.FAILED})
_OUTCOMES = frozenset({EventType.SUCCEEDED, EventType.RETRY_SCHEDULED, EventType.FAILED})


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_BYTES


class GcClock:
    """CPU time spent in the cyclic garbage collector (it shows in no profile frame)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.longest = 0.0
        self._began = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.process_time()
        else:
            spent = time.process_time() - self._began
            self.seconds += spent
            self.longest = max(self.longest, spent)


def payload_for(i: int) -> str:
    """A distinct 100-character payload per job, as distinct requests would carry."""
    return f"{i:0100d}"


class Feeder:
    """Feeds `n` jobs, keeping at most `window` unfinished, so the backlog stays
    bounded and memory measures what is retained, not what is waiting."""

    def __init__(self, n: int, window: int) -> None:
        self.n = n
        self.window = window
        self.in_flight = 0
        self.finished = 0
        self._room = asyncio.Event()
        self._all_done = asyncio.Event()
        self.on_finished: Callable[[int], None] | None = None

    def finish(self) -> None:
        self.finished += 1
        self.in_flight -= 1
        if self.in_flight <= self.window // 2:
            self._room.set()
        if self.on_finished is not None:
            self.on_finished(self.finished)
        if self.finished == self.n:
            self._all_done.set()

    async def run(self, submit: Callable[[int], Awaitable[None]]) -> None:
        for i in range(self.n):
            if self.in_flight >= self.window:
                self._room.clear()
                await self._room.wait()
            self.in_flight += 1
            await submit(i)
        await self._all_done.wait()


def noop_processor() -> Processor:
    return SimulatedProcessor(min_ms=0, max_ms=0, error_rate=0)


async def kasp_parts(*, retain: int, capacity: int, workers: int, processor: Processor) -> Parts:
    """kasp as the service builds it (service/parts.py: store, engine, pool, and the feed and
    metrics listening to the store), on the memory store, with the service's other defaults."""
    config = Config(store="memory", retain_finished=retain, queue_size=capacity, workers=workers)
    return await build_parts(config, processor=processor)


async def feed_kasp(feeder: Feeder, *, retain: int, workers: int) -> None:
    parts = await kasp_parts(
        retain=retain, capacity=feeder.n + 1, workers=workers, processor=noop_processor()
    )
    store, engine, pool = parts.store, parts.engine, parts.pool

    def count(event: Event) -> None:
        if event.type in _FINISHING:
            feeder.finish()

    store.add_listener(count)
    pool.start()

    async def submit(i: int) -> None:
        await engine.enqueue(JobRequest(f"job-{i}", payload_for(i)))

    await feeder.run(submit)
    await pool.stop(timeout_s=1)


async def feed_bare(feeder: Feeder, *, workers: int) -> None:
    bare = BareQueue(noop_processor(), workers=workers, on_done=lambda job: feeder.finish())
    bare.start()

    async def submit(i: int) -> None:
        bare.enqueue(f"job-{i}", payload_for(i), 0)

    await feeder.run(submit)
    bare.stop()


async def engine(args: argparse.Namespace) -> dict[str, Any]:
    """Jobs/s from enqueue to done with a no-op processor."""
    feeder = Feeder(args.jobs, args.window)
    gc_clock = GcClock()
    began, began_cpu = time.perf_counter(), time.process_time()
    if args.impl == "kasp":
        await feed_kasp(feeder, retain=args.retain, workers=args.workers)
    else:
        await feed_bare(feeder, workers=args.workers)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - began_cpu
    return {
        "jobs": args.jobs,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "jobs_per_s": args.jobs / elapsed,
        "jobs_per_cpu_s": args.jobs / cpu,
        "gc_share": gc_clock.seconds / cpu,
        "gc_longest_ms": gc_clock.longest * 1000,
    }


async def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Resident bytes per retained finished job (3 events each), and RSS at two points of a long run."""
    samples: dict[int, int] = {}
    points = set(args.sample_at)

    warm = Feeder(1_000, args.window)
    feeder = Feeder(args.jobs, args.window)

    def sample(finished: int) -> None:
        if finished in points:
            gc.collect()
            samples[finished] = rss_bytes()

    # One store for warm-up and run, so the per-job figure excludes start-up costs.
    parts = await kasp_parts(
        retain=args.retain, capacity=args.jobs + 2_000, workers=args.workers, processor=noop_processor()
    )
    store, eng, pool = parts.store, parts.engine, parts.pool
    current = [warm]

    def count(event: Event) -> None:
        if event.type in _FINISHING:
            current[0].finish()

    store.add_listener(count)
    pool.start()

    async def warm_up(i: int) -> None:
        await eng.enqueue(JobRequest(f"warm-{i}", payload_for(i)))

    await warm.run(warm_up)
    gc.collect()
    before = rss_bytes()
    current[0] = feeder
    feeder.on_finished = sample

    async def submit(i: int) -> None:
        await eng.enqueue(JobRequest(f"job-{i}", payload_for(i)))

    await feeder.run(submit)
    gc.collect()
    after = rss_bytes()
    await pool.stop(timeout_s=1)
    stats = await store.stats()
    retained = sum(stats.jobs.values())
    return {
        "jobs": args.jobs,
        "retain": args.retain,
        "retained_jobs": retained,
        "retained_events": stats.event_count,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_retained_job": (after - before) / max(1, min(args.jobs, args.retain)),
        "rss_samples": {str(k): v for k, v in sorted(samples.items())},
        "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


class TimedWork:
    """The default simulated processor, recording what each attempt asked to sleep
    and when it ended, so utilisation can be computed against the work drawn."""

    def __init__(self, *, min_ms: int, max_ms: int, error_rate: int) -> None:
        self._asked: dict[asyncio.Task[Any] | None, float] = {}
        self.ended: list[tuple[float, float]] = []  # (monotonic end, seconds of work asked)
        self._inner = SimulatedProcessor(
            min_ms=min_ms, max_ms=max_ms, error_rate=error_rate, sleep=self._sleep
        )

    async def _sleep(self, seconds: float) -> None:
        self._asked[asyncio.current_task()] = seconds
        await asyncio.sleep(seconds)

    async def __call__(self, attempt: Attempt) -> None:
        try:
            await self._inner(attempt)
        finally:
            self.ended.append((time.monotonic(), self._asked.pop(asyncio.current_task(), 0.0)))


async def utilisation(args: argparse.Namespace) -> dict[str, Any]:
    """Completed attempts/s ÷ (WORKERS ÷ mean work time), measured while a backlog waits."""
    backlog = args.backlog_per_worker * args.workers
    work = TimedWork(min_ms=args.work_min_ms, max_ms=args.work_max_ms, error_rate=args.error_rate)
    parts = await kasp_parts(retain=10**9, capacity=backlog + 1, workers=args.workers, processor=work)
    store, eng, pool = parts.store, parts.engine, parts.pool
    for i in range(backlog):
        await eng.enqueue(JobRequest(f"job-{i}", payload_for(i), args.max_retries))
    began = time.monotonic()
    pool.start()
    deadline = began + args.seconds
    ran_dry = None
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        if (await store.stats()).ready == 0:
            ran_dry = time.monotonic()  # from here on, idle workers are the backlog's fault
            break
    ended = ran_dry if ran_dry is not None else time.monotonic()
    window_start = began + args.warmup
    in_window = [asked for end, asked in work.ended if window_start <= end <= ended]
    await pool.stop(timeout_s=0)
    span = ended - window_start
    rate = len(in_window) / span
    mean_work = statistics.fmean(in_window) if in_window else float("nan")
    return {
        "workers": args.workers,
        "window_s": span,
        "attempts": len(in_window),
        "attempts_per_s": rate,
        "mean_work_s": mean_work,
        "ran_dry": ran_dry is not None,
        "utilisation": rate / (args.workers / mean_work),
        "utilisation_nominal": rate / (args.workers / ((args.work_min_ms + args.work_max_ms) / 2000)),
    }


async def scheduled(args: argparse.Namespace) -> dict[str, Any]:
    """Memory per scheduled job, and the process's CPU while they all wait (SPEC: a scheduled
    job holds no worker; issue 9: no timer and no query per job)."""
    parts = await kasp_parts(retain=10**9, capacity=1, workers=args.workers, processor=noop_processor())
    store, eng, pool = parts.store, parts.engine, parts.pool
    pool.start()
    await asyncio.sleep(0)  # the workers park
    gc.collect()
    before = rss_bytes()
    began = now_ms()
    first_ms = began + int(args.lead_s * 1000)
    span_ms = int(args.span_s * 1000)
    for i in range(args.jobs):
        # Spread evenly over the span, in a shuffled order, as independent clients would send them.
        due_ms = first_ms + (i * 7919 % args.jobs) * span_ms // args.jobs
        await eng.enqueue(JobRequest(f"job-{i}", payload_for(i), due_ms=due_ms))
    enqueue_s = (now_ms() - began) / 1000
    gc.collect()
    after = rss_bytes()
    stats = await store.stats()
    assert stats.delayed == args.jobs and stats.ready == 0, stats
    cpu_began, wall_began = time.process_time(), time.perf_counter()
    await asyncio.sleep(args.idle_s)
    idle_cpu_s = time.process_time() - cpu_began
    idle_wall_s = time.perf_counter() - wall_began
    assert now_ms() < first_ms, "the idle window must end before the first job is due"
    stats = await store.stats()
    await pool.stop(timeout_s=0)
    return {
        "jobs": args.jobs,
        "enqueue_jobs_per_s": args.jobs / enqueue_s,
        "bytes_per_scheduled_job": (after - before) / args.jobs,
        "idle_seconds": idle_wall_s,
        "idle_cpu_share": idle_cpu_s / idle_wall_s,
        "still_delayed": stats.delayed,
    }


async def engine_with_waiters(args: argparse.Namespace) -> dict[str, Any]:
    """The engine scenario with `--waiters` long-polls held open (GET /jobs/{id}?wait=60)
    on jobs that do not finish during the run, as request/reply clients would hold them."""
    parts = await kasp_parts(
        retain=args.retain, capacity=args.jobs + args.waiters + 1, workers=4, processor=noop_processor()
    )
    store, eng, pool, waiters = parts.store, parts.engine, parts.pool, parts.waiters
    feeder = Feeder(args.jobs, args.window)

    def count(event: Event) -> None:
        if event.type in _FINISHING and event.job_id.startswith("job-"):
            feeder.finish()

    store.add_listener(count)
    far_ms = now_ms() + 3_600_000
    held = []
    for i in range(args.waiters):
        await eng.enqueue(JobRequest(f"held-{i}", "", due_ms=far_ms))
        held.append(asyncio.create_task(waiters.wait_finished(f"held-{i}", 60, store.get_job)))
    await asyncio.sleep(0)
    assert waiters.count == args.waiters
    pool.start()

    async def submit(i: int) -> None:
        await eng.enqueue(JobRequest(f"job-{i}", payload_for(i)))

    began, began_cpu = time.perf_counter(), time.process_time()
    await feeder.run(submit)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - began_cpu
    assert waiters.count == args.waiters, "every waiter was still waiting at the end"
    for task in held:
        task.cancel()
    await pool.stop(timeout_s=1)
    return {
        "jobs": args.jobs,
        "waiters": args.waiters,
        "jobs_per_s": args.jobs / elapsed,
        "jobs_per_cpu_s": args.jobs / cpu,
    }


async def batch(args: argparse.Namespace) -> dict[str, Any]:
    """CPU µs per job of `Engine.enqueue_many` on lists of `--size` new jobs (what POST
    /enqueue/batch calls), no worker claiming: admission alone, as bench/batch.py measures it."""
    parts = await kasp_parts(
        retain=args.retain, capacity=args.jobs + 1, workers=1, processor=noop_processor()
    )
    gc_clock = GcClock()
    full_before = gc.get_stats()[2]["collections"]
    cpu = 0.0
    for first in range(0, args.jobs, args.size):
        # Built outside the timed part: the HTTP layer's parsing is not measured here.
        jobs = [
            JobRequest(f"b{i}", payload_for(i), 3) for i in range(first, min(first + args.size, args.jobs))
        ]
        began = time.process_time()
        await parts.engine.enqueue_many(jobs)
        cpu += time.process_time() - began
    return {
        "jobs": args.jobs,
        "size": args.size,
        "cpu_us_per_job": cpu * 1e6 / args.jobs,
        "gc_share": gc_clock.seconds / cpu,
        "full_collections": gc.get_stats()[2]["collections"] - full_before,
    }


SCENARIOS = {
    "batch": batch,
    "engine": engine,
    "memory": memory,
    "utilisation": utilisation,
    "scheduled": scheduled,
    "waiters": engine_with_waiters,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inproc")
    sub = parser.add_subparsers(dest="scenario", required=True)
    e = sub.add_parser("engine")
    e.add_argument("--impl", choices=("kasp", "bare"), required=True)
    e.add_argument("--jobs", type=int, default=200_000)
    e.add_argument("--workers", type=int, default=4)
    e.add_argument("--window", type=int, default=1_000)
    e.add_argument("--retain", type=int, default=100_000)
    m = sub.add_parser("memory")
    m.add_argument("--jobs", type=int, default=200_000)
    m.add_argument("--retain", type=int, default=100_000)
    m.add_argument("--workers", type=int, default=4)
    m.add_argument("--window", type=int, default=1_000)
    m.add_argument("--sample-at", type=int, nargs="*", default=[])
    u = sub.add_parser("utilisation")
    u.add_argument("--workers", type=int, default=4)
    u.add_argument("--seconds", type=float, default=8.0)
    u.add_argument("--warmup", type=float, default=1.0)
    u.add_argument("--backlog-per-worker", type=int, default=50)
    u.add_argument("--work-min-ms", type=int, default=100)
    u.add_argument("--work-max-ms", type=int, default=500)
    u.add_argument("--error-rate", type=int, default=20)
    u.add_argument("--max-retries", type=int, default=5)
    sc = sub.add_parser("scheduled")
    sc.add_argument("--jobs", type=int, default=1_000_000)
    sc.add_argument("--workers", type=int, default=4)
    sc.add_argument("--lead-s", type=float, default=600.0, help="seconds from now to the first due time")
    sc.add_argument("--span-s", type=float, default=3600.0, help="due times spread over this many seconds")
    sc.add_argument("--idle-s", type=float, default=5.0)
    w = sub.add_parser("waiters")
    w.add_argument("--jobs", type=int, default=200_000)
    w.add_argument("--waiters", type=int, default=100)
    w.add_argument("--window", type=int, default=1_000)
    w.add_argument("--retain", type=int, default=100_000)
    b = sub.add_parser("batch")
    b.add_argument("--jobs", type=int, default=200_000)
    b.add_argument("--size", type=int, default=100)
    b.add_argument("--retain", type=int, default=100_000)
    args = parser.parse_args(argv)
    random.seed()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(SCENARIOS[args.scenario](args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
