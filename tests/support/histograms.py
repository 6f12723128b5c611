"""What the attempt histograms should expose: checked by definition, and against the
prometheus-client Histograms service/metrics.py used before it kept plain ints."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from domain.events import Event
from domain.states import ATTEMPT_OUTCOMES, EventType
from service.metrics import ATTEMPT_BUCKETS, START_LATENCY_BUCKETS

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def check_histogram(
    samples: Samples, name: str, labels: Mapping[str, str], bounds: Iterable[float], values_ms: Iterable[int]
) -> None:
    """The series `name{labels}` holds exactly the observations `values_ms` (as seconds)."""
    seconds = [v / 1000 for v in values_ms]
    key = tuple(sorted(labels.items()))
    for bound in (*bounds, math.inf):
        le = "+Inf" if bound == math.inf else repr(float(bound))
        # cumulative: every observation at or below the bound
        expected = sum(1 for s in seconds if s <= bound)
        assert samples[(f"{name}_bucket", tuple(sorted({**labels, "le": le}.items())))] == expected, le
    assert samples[(f"{name}_count", key)] == len(seconds)
    assert abs(samples[(f"{name}_sum", key)] - sum(seconds)) < 1e-9
    assert (f"{name}_created", key) in samples


def prometheus_client_histograms() -> tuple[CollectorRegistry, Callable[[Event], None]]:
    """The Histograms service/metrics.py built before, and a listener that feeds them alike."""
    registry = CollectorRegistry()
    duration = Histogram(
        "kasp_attempt_duration_seconds",
        "Duration of finished attempts, by outcome event",
        ["outcome"],
        buckets=ATTEMPT_BUCKETS,
        registry=registry,
    )
    latency = Histogram(
        "kasp_start_latency_seconds",
        "Time from a job becoming ready (enqueued, requeued, interrupted, retry due) to its start",
        buckets=START_LATENCY_BUCKETS,
        registry=registry,
    )
    by_outcome = {t: duration.labels(t.value) for t in sorted(ATTEMPT_OUTCOMES)}

    def feed(e: Event) -> None:
        if e.type is EventType.STARTED:
            latency.observe(e.data["waited_ms"] / 1000)
        elif e.type in by_outcome and "duration_ms" in e.data:
            by_outcome[e.type].observe(e.data["duration_ms"] / 1000)

    return registry, feed
