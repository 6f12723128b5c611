"""The attempt histograms, kept as plain ints, expose what prometheus-client's Histogram did.

No store here: these feed `Metrics.on_event` directly, to know every observation exactly
(tests/observe/test_metrics.py checks the same series through /metrics on every store).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from domain.events import Event
from domain.states import ATTEMPT_OUTCOMES, EventType, JobState
from service.metrics import ATTEMPT_BUCKETS, START_LATENCY_BUCKETS, Metrics
from tests.support.histograms import check_histogram, parse, prometheus_client_histograms

#: Milliseconds, on and around the bucket bounds (`le` is inclusive) and past the last one.
DURATIONS_MS: dict[EventType, list[int]] = {
    EventType.SUCCEEDED: [0, 5, 6, 10, 100, 1000, 1001, 2500, 900_000, 900_001],
    EventType.FAILED: [250, 250, 60_000],
    EventType.RETRY_SCHEDULED: [],
    EventType.INTERRUPTED: [7],
    EventType.CANCELLED: [40],
}
WAITS_MS = [0, 1, 2, 5, 999, 1000, 300_000, 300_001]


def event(kind: EventType, **data: int) -> Event:
    return Event(kind, "j", 0, JobState.RUNNING, JobState.RUNNING, 1, 2, data)


def feed_known_attempts(feed: Callable[[Event], None]) -> None:
    """The events of the known attempts, plus some that carry no duration (not observed)."""
    for waited_ms in WAITS_MS:
        feed(event(EventType.STARTED, waited_ms=waited_ms))
    for kind, durations in DURATIONS_MS.items():
        for duration_ms in durations:
            feed(event(kind, duration_ms=duration_ms))
    feed(event(EventType.INTERRUPTED))  # a lost lease: no duration
    feed(event(EventType.CANCELLED))  # a queued job's cancel: no duration
    feed(event(EventType.ENQUEUED))


class _Families:
    """Some of a registry's families as a collector (generate_latest takes any collector)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families


def test_buckets_count_and_sum_are_those_of_the_observations() -> None:
    metrics = Metrics()
    feed_known_attempts(metrics.on_event)
    samples = parse(generate_latest(metrics.registry).decode())

    for kind in sorted(ATTEMPT_OUTCOMES):
        check_histogram(
            samples,
            "kasp_attempt_duration_seconds",
            {"outcome": kind.value},
            ATTEMPT_BUCKETS,
            DURATIONS_MS[kind],
        )
    check_histogram(samples, "kasp_start_latency_seconds", {}, START_LATENCY_BUCKETS, WAITS_MS)

    # The bounds are inclusive and the buckets cumulative, spelt out for `succeeded`.
    def succeeded(le: str) -> float:
        return samples[("kasp_attempt_duration_seconds_bucket", (("le", le), ("outcome", "succeeded")))]

    les = ("0.005", "0.01", "0.1", "1.0", "2.5", "900.0", "+Inf")
    assert [succeeded(le) for le in les] == [2, 4, 5, 6, 8, 9, 10]
    assert samples[("kasp_start_latency_seconds_bucket", (("le", "0.001"),))] == 2


@pytest.mark.parametrize("encode", [generate_latest, generate_openmetrics], ids=["text", "openmetrics"])
def test_exposition_is_prometheus_clients_histograms_own(encode: Callable[[Any], bytes]) -> None:
    metrics = Metrics()
    feed_known_attempts(metrics.on_event)
    reference, feed = prometheus_client_histograms()
    feed_known_attempts(feed)

    def masked(text: bytes) -> list[str]:
        # `_created` is the time each was built: the one value that differs.
        return re.sub(r"^(\S+_created(?:\{[^}]*\})?) \S+$", r"\1 T", text.decode(), flags=re.M).splitlines()

    ours = masked(encode(_Families(f for f in metrics.registry.collect() if f.type == "histogram")))
    assert ours == masked(encode(reference))
    assert sum(1 for line in ours if "_created" in line and not line.startswith("#")) == 6
