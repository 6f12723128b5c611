"""Prometheus metrics: counters fed by the store listener, gauges read at scrape time.

Nothing here runs per request. Per event, the listener bumps a counter and, for
`started` and outcome events, observes one histogram sample. Levels (jobs by
state, queue depth, busy workers, ...) are not tracked at all: /metrics reads
them from `store.stats()` and the pool when scraped, so they cannot drift from
/stats. Each app has its own registry (tests run several apps in one process).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from math import inf

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from domain.events import Event
from domain.states import ATTEMPT_OUTCOMES, EventType, JobState
from service.store.base import StoreStats

# Rejected enqueues (a POST /enqueue, a whole POST /enqueue/batch, or one job of a
# batch) by status -> reason label. The statuses come from the one
# error table (service/http/errors.py); this only groups them for operators.
REJECTION_REASONS: Mapping[int, str] = {
    400: "invalid",
    413: "invalid",
    415: "invalid",
    409: "conflict",
    429: "full",
    503: "draining",
}
ENQUEUE_PATHS = frozenset({"/enqueue", "/enqueue/batch"})

# Seconds. Simulated attempts take 0.1-0.5 s (SPEC defaults); real processors
# vary widely, so the buckets reach minutes (a guess).
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# Ready-to-start waits: ~a loop iteration when workers are idle, queue-length
# times attempt duration when they are not (a guess).
START_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# Python 3.11 resolves an enum member named on its class (`JobState.QUEUED`) through a
# descriptor, ~0.2 µs a lookup; hot paths compare against these module names (Issue 12).
_STARTED = EventType.STARTED


@dataclass(frozen=True, slots=True)
class Levels:
    """What /metrics reports as gauges: the same sources /stats reads."""

    store: StoreStats
    queue_capacity: int
    workers: int
    workers_busy: int
    accepting: bool
    streams: int
    streams_dropped: Mapping[str, int]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Plain counts per type, exposed at scrape time like the rejections below: this
        # runs for every event, and prometheus-client's locked Counter.inc was ~2.5% of a
        # POST /enqueue in the profile (docs/PERFORMANCE.md, Issue 12).
        self.events: dict[EventType, int] = dict.fromkeys(EventType, 0)
        self.registry.register(_EventsCollector(self.events, created=time.time()))
        # Plain per-bucket ints, exposed at scrape time as the series prometheus-client's
        # Histogram produced: its observe takes a lock twice, two calls a job, and made
        # on_event 13-17% of the engine benchmark's py-spy samples (~2.5% with these ints;
        # jobs per CPU-second +8%; docs/PERFORMANCE.md, "Metrics without locks").
        # Every series exists from the start, at 0.
        self._duration_by_outcome = {
            t: _Histogram(ATTEMPT_BUCKETS, created=time.time()) for t in sorted(ATTEMPT_OUTCOMES)
        }
        self.registry.register(
            _HistogramCollector(
                "kasp_attempt_duration_seconds",
                "Duration of finished attempts, by outcome event",
                ["outcome"],
                {(t.value,): h for t, h in self._duration_by_outcome.items()},
            )
        )
        self._start_latency = _Histogram(START_LATENCY_BUCKETS, created=time.time())
        self.registry.register(
            _HistogramCollector(
                "kasp_start_latency_seconds",
                "Time from a job becoming ready (enqueued, requeued, interrupted, retry due) to its start",
                [],
                {(): self._start_latency},
            )
        )
        # A plain count per reason, exposed at scrape time: rejections come in floods
        # (a full queue answers 429 to every request), and prometheus-client's
        # locked Counter.inc was 2% of such a request (docs/PERFORMANCE.md). A dict, not
        # a collections.Counter: `counter[k] += 1` took 0.10 µs, a dict's 0.04 (timeit; Item 1).
        self.rejected: dict[str, int] = dict.fromkeys(REJECTION_REASONS.values(), 0)
        self.registry.register(_RejectionsCollector(self.rejected))
        self._levels = _LevelsCollector()
        self.registry.register(self._levels)

    # -- the store listener ------------------------------------------------

    def on_event(self, event: Event) -> None:
        kind = event.type
        self.events[kind] += 1
        if kind is _STARTED:
            self._start_latency.observe(event.data["waited_ms"] / 1000)
            return
        if kind in ATTEMPT_OUTCOMES:
            duration_ms = event.data.get("duration_ms")
            if duration_ms is not None:  # an `interrupted` of a lost lease, a queued job's `cancelled`: none
                self._duration_by_outcome[kind].observe(duration_ms / 1000)

    # -- HTTP --------------------------------------------------------------

    def count_rejection(self, method: str, path: str, status: int) -> None:
        """Called for every error response; counts those that refused an enqueue."""
        if path in ENQUEUE_PATHS and method == "POST":
            self.count_enqueue_rejection(status)

    def count_enqueue_rejection(self, status: int) -> None:
        """`count_rejection` for an enqueue the handler answered itself (a 429, a batch's job)."""
        reason = REJECTION_REASONS.get(status)
        if reason is not None:
            self.rejected[reason] += 1

    def render(self, levels: Levels, encoder: Callable[[CollectorRegistry], bytes]) -> bytes:
        """The exposition text with `levels` as the gauges' values (one scrape)."""
        self._levels.levels = levels
        try:
            return encoder(self.registry)
        finally:
            self._levels.levels = None


class _EventsCollector:
    """`kasp_events_total{type}`, every type present from the start at 0, with `_created`
    as a prometheus-client Counter child would have it."""

    def __init__(self, counts: Mapping[EventType, int], *, created: float) -> None:
        self._counts = counts
        self._created = created

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(
            "kasp_events", "Events appended to the log by this process, by type", labels=["type"]
        )
        for kind, count in self._counts.items():
            family.add_metric([kind.value], count, created=self._created)
        return [family]


class _Histogram:
    """One histogram series' observations: a count per bucket (not cumulative) and a sum."""

    __slots__ = ("_bounds", "_les", "counts", "created", "sum")

    def __init__(self, buckets: Sequence[float], *, created: float) -> None:
        self._bounds = (*map(float, buckets), inf)  #: upper bounds, `le` inclusive
        #: the `le` labels, spelt as prometheus-client's Histogram spells them ("1.0", "+Inf")
        self._les: tuple[str, ...] = tuple(map(floatToGoString, self._bounds))
        self.counts = [0] * len(self._bounds)
        self.sum = 0.0
        self.created = created

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, as prometheus-client's `value <= bound` picks.
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (`le`, count) pairs, `+Inf` last, as HistogramMetricFamily takes them."""
        total = 0
        pairs: list[tuple[str, float]] = []
        for le, count in zip(self._les, list(self.counts), strict=True):
            total += count
            pairs.append((le, total))
        return pairs


class _HistogramCollector:
    """A histogram family with the samples a prometheus-client Histogram gives each series:
    `_bucket{le}` (cumulative), `_count`, `_sum` and `_created`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        series: Mapping[tuple[str, ...], _Histogram],
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = labelnames
        self._series = series

    def collect(self) -> list[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labelvalues, histogram in self._series.items():
            family.add_metric(labelvalues, histogram.buckets(), histogram.sum)
            # HistogramMetricFamily has no `created` argument (CounterMetricFamily does).
            labels = dict(zip(self._labelnames, labelvalues, strict=True))
            family.samples.append(Sample(f"{self._name}_created", labels, histogram.created))
        return [family]


class _RejectionsCollector:
    """`kasp_enqueue_rejected_total{reason}`, every reason present from the start at 0."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self._counts = counts

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(
            "kasp_enqueue_rejected",
            "Enqueues refused (a POST /enqueue, a whole POST /enqueue/batch, or one job of a batch), "
            "by reason: invalid (400/413/415), conflict (409), full (429), draining (503)",
            labels=["reason"],
        )
        for reason in sorted(set(REJECTION_REASONS.values())):
            family.add_metric([reason], self._counts.get(reason, 0))
        return [family]


class _LevelsCollector:
    """Gauges computed from one `Levels` snapshot taken by the /metrics handler."""

    def __init__(self) -> None:
        self.levels: Levels | None = None

    def describe(self) -> list[Metric]:
        return list(self._families(None))

    def collect(self) -> list[Metric]:
        return list(self._families(self.levels))

    def _families(self, lv: Levels | None) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("kasp_jobs", "Retained jobs by state", labels=["state"])
        depth = GaugeMetricFamily("kasp_queue_depth", "Jobs admitted and ready, not yet started")
        capacity = GaugeMetricFamily("kasp_queue_capacity", "QUEUE_SIZE: ready jobs admitted before 429")
        delayed = GaugeMetricFamily("kasp_queue_delayed", "Queued jobs waiting out a retry delay")
        workers = GaugeMetricFamily("kasp_workers", "Worker tasks in the pool (WORKERS)")
        busy = GaugeMetricFamily("kasp_workers_busy", "Workers running an attempt")
        accepting = GaugeMetricFamily("kasp_accepting", "1 while POST /enqueue admits jobs, 0 once draining")
        retained = GaugeMetricFamily("kasp_events_retained", "Events in the log (after retention eviction)")
        last_seq = GaugeMetricFamily("kasp_events_last_seq", "Seq of the newest event")
        streams = GaugeMetricFamily("kasp_streams", "Open GET /events/stream subscribers")
        dropped = CounterMetricFamily(
            "kasp_streams_dropped",
            "Event streams ended by the server: slow_consumer (accepted no data for STREAM_SEND_TIMEOUT) "
            "or shutdown (still blocked when the service stopped)",
            labels=["reason"],
        )
        if lv is not None:
            for state in JobState:
                jobs.add_metric([state.value], lv.store.jobs.get(state, 0))
            depth.add_metric([], lv.store.ready)
            capacity.add_metric([], lv.queue_capacity)
            delayed.add_metric([], lv.store.delayed)
            workers.add_metric([], lv.workers)
            busy.add_metric([], lv.workers_busy)
            accepting.add_metric([], 1 if lv.accepting else 0)
            retained.add_metric([], lv.store.event_count)
            last_seq.add_metric([], lv.store.last_seq)
            streams.add_metric([], lv.streams)
            for reason in ("slow_consumer", "shutdown"):
                dropped.add_metric([reason], lv.streams_dropped.get(reason, 0))
        yield from (
            jobs,
            depth,
            capacity,
            delayed,
            workers,
            busy,
            accepting,
            retained,
            last_seq,
            streams,
            dropped,
        )
