"""GET /metrics: parses with prometheus-client's own parser and agrees with /stats and the log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime

import httpx
from prometheus_client import generate_latest

from service.metrics import ATTEMPT_BUCKETS, START_LATENCY_BUCKETS
from tests.support.histograms import Samples, check_histogram, parse, prometheus_client_histograms
from tests.support.server import RunningServer, wait_until

MakeServer = Callable[..., tuple[RunningServer, httpx.Client]]


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def all_events(client: httpx.Client) -> list[dict[str, object]]:
    return client.get("/events", params={"limit": 1000}).json()["events"]


def test_metrics_parse_and_agree_with_stats(make_server: MakeServer) -> None:
    hour_ms = 3_600_000  # full jitter: a delay short enough to end during the test is ~1 in 10^5
    _, client = make_server(workers=3, queue_size=2, backoff_base_ms=hour_ms, backoff_max_ms=hour_ms)
    for job_id in ("s1", "s2"):
        client.post("/enqueue", json={"id": job_id, "payload": "sleep=30"})
    client.post("/enqueue", json={"id": "delayed", "payload": "fail", "max_retries": 3})
    wait_until(lambda: client.get("/jobs/delayed").json()["next_attempt_at"] is not None)
    client.post("/enqueue", json={"id": "ok", "payload": "ok"})
    client.post("/enqueue", json={"id": "failed", "payload": "fail"})
    wait_until(lambda: client.get("/jobs/failed").json()["state"] == "failed")
    wait_until(lambda: client.get("/jobs/ok").json()["state"] == "done")
    client.post("/enqueue", json={"id": "s3", "payload": "sleep=30"})
    wait_until(lambda: client.get("/stats").json()["workers"]["busy"] == 3)
    for job_id in ("q1", "q2"):
        client.post("/enqueue", json={"id": job_id, "payload": "ok"})

    stats = client.get("/stats").json()
    samples = scrape(client)
    assert stats == {
        "accepting": True,
        "queue": {"depth": 2, "capacity": 2, "delayed": 1},
        "workers": {"size": 3, "busy": 3},
        "jobs": {"queued": 3, "running": 3, "done": 1, "failed": 1, "cancelled": 0},
        "events": {"count": stats["events"]["last_seq"], "last_seq": stats["events"]["last_seq"]},
    }
    for state, count in stats["jobs"].items():
        assert value(samples, "kasp_jobs", state=state) == count
    assert value(samples, "kasp_queue_depth") == stats["queue"]["depth"]
    assert value(samples, "kasp_queue_capacity") == stats["queue"]["capacity"]
    assert value(samples, "kasp_queue_delayed") == stats["queue"]["delayed"]
    assert value(samples, "kasp_workers") == stats["workers"]["size"]
    assert value(samples, "kasp_workers_busy") == stats["workers"]["busy"]
    assert value(samples, "kasp_accepting") == 1
    assert value(samples, "kasp_events_retained") == stats["events"]["count"]
    assert value(samples, "kasp_events_last_seq") == stats["events"]["last_seq"]

    # Counters and histograms agree with the log itself.
    log = all_events(client)
    by_type = Counter(e["type"] for e in log)
    for event_type in (
        "enqueued",
        "started",
        "succeeded",
        "retry_scheduled",
        "failed",
        "requeued",
        "interrupted",
    ):
        assert value(samples, "kasp_events_total", type=event_type) == by_type[event_type]
    assert sum(by_type.values()) == stats["events"]["last_seq"]
    for outcome in ("succeeded", "retry_scheduled", "failed"):
        assert value(samples, "kasp_attempt_duration_seconds_count", outcome=outcome) == by_type[outcome]
        assert (
            value(samples, "kasp_attempt_duration_seconds_bucket", outcome=outcome, le="+Inf")
            == by_type[outcome]
        )
    assert value(samples, "kasp_start_latency_seconds_count") == by_type["started"]


def test_histograms_hold_the_logged_durations_and_waits(make_server: MakeServer) -> None:
    _, client = make_server(workers=2)
    payloads = [
        "ok",
        "sleep=0.03",
        "sleep=0.07",
        "sleep=0.3",
        "sleepfail=0.012",
        "fail,ok",
        "ok",
        "sleep=0.03",
    ]
    for n, payload in enumerate(payloads):
        client.post("/enqueue", json={"id": f"j{n}", "payload": payload, "max_retries": 1})
    wait_until(
        lambda: all(
            client.get(f"/jobs/j{n}").json()["state"] in ("done", "failed") for n in range(len(payloads))
        )
    )
    samples = scrape(client)
    log = all_events(client)

    for outcome in ("succeeded", "retry_scheduled", "failed"):
        durations = [e["data"]["duration_ms"] for e in log if e["type"] == outcome]
        assert durations
        check_histogram(
            samples, "kasp_attempt_duration_seconds", {"outcome": outcome}, ATTEMPT_BUCKETS, durations
        )
    waits = [e["data"]["waited_ms"] for e in log if e["type"] == "started"]
    assert len(waits) == len(payloads) + 2  # the two retries
    check_histogram(samples, "kasp_start_latency_seconds", {}, START_LATENCY_BUCKETS, waits)

    # The same histogram series (names and labels) as prometheus-client's own Histograms.
    reference, _ = prometheus_client_histograms()
    histograms = {k for k in samples if k[0].startswith(("kasp_attempt_", "kasp_start_"))}
    assert histograms == set(parse(generate_latest(reference).decode()))


def test_rejected_enqueues_are_counted_by_reason(make_server: MakeServer) -> None:
    server, client = make_server(workers=1, queue_size=1, max_body_bytes=1000, shutdown_timeout=0.1)
    client.post("/enqueue", json={"id": "busy", "payload": "sleep=30"})
    wait_until(lambda: client.get("/jobs/busy").json()["state"] == "running")
    assert client.post("/enqueue", json={"id": "waiting", "payload": "ok"}).status_code == 202

    statuses = [
        client.post("/enqueue", content=b"{", headers={"content-type": "application/json"}).status_code,
        client.post("/enqueue", json={"id": "x", "payload": 3}).status_code,
        client.post("/enqueue", content=b"id=x", headers={"content-type": "text/plain"}).status_code,
        client.post("/enqueue", json={"id": "big", "payload": "x" * 2000}).status_code,
        # beyond MAX_BODY_BYTES plus the header budget: Sanic refuses it while reading the body
        client.post("/enqueue", json={"id": "huge", "payload": "x" * 200_000}).status_code,
        client.post("/enqueue", json={"id": "waiting", "payload": "different"}).status_code,
        client.post("/enqueue", json={"id": "third", "payload": "ok"}).status_code,
        client.post(
            "/enqueue", json={"id": "waiting", "payload": "ok"}
        ).status_code,  # a re-send: not refused
        client.get("/jobs/nope").status_code,  # not an enqueue
        client.get("/enqueue").status_code,  # not an enqueue either
    ]
    assert statuses == [400, 400, 415, 413, 413, 409, 429, 200, 404, 405]
    samples = scrape(client)
    assert value(samples, "kasp_enqueue_rejected_total", reason="invalid") == 5
    assert value(samples, "kasp_enqueue_rejected_total", reason="conflict") == 1
    assert value(samples, "kasp_enqueue_rejected_total", reason="full") == 1
    assert value(samples, "kasp_enqueue_rejected_total", reason="draining") == 0

    server.begin_shutdown().result(10)
    assert client.post("/enqueue", json={"id": "late", "payload": "ok"}).status_code == 503
    samples = scrape(client)
    assert value(samples, "kasp_enqueue_rejected_total", reason="draining") == 1
    assert value(samples, "kasp_accepting") == 0
    assert value(samples, "kasp_events_total", type="interrupted") == 1
    assert value(samples, "kasp_attempt_duration_seconds_count", outcome="interrupted") == 1


def test_start_latency_counts_from_when_a_retry_became_due(make_server: MakeServer) -> None:
    _, client = make_server(backoff_base_ms=300, backoff_max_ms=300)
    client.post("/enqueue", json={"id": "r", "payload": "fail,ok", "max_retries": 1})
    wait_until(lambda: client.get("/jobs/r").json()["state"] == "done", timeout=10)
    events = client.get("/jobs/r/events").json()["events"]
    assert [e["type"] for e in events] == ["enqueued", "started", "retry_scheduled", "started", "succeeded"]
    enqueued, started1, retry, started2, _ = (ms(e["at"]) for e in events)
    due = retry + events[2]["data"]["delay_ms"]
    samples = scrape(client)
    assert value(samples, "kasp_start_latency_seconds_count") == 2
    # Measured from when the job became ready: its enqueue, then its retry's due time.
    expected_s = ((started1 - enqueued) + max(0, started2 - due)) / 1000
    assert abs(value(samples, "kasp_start_latency_seconds_sum") - expected_s) < 1e-9


def ms(at: str) -> int:
    return int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp() * 1000 + 0.5)


def test_openmetrics_is_served_when_asked_for(client: httpx.Client) -> None:
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
