"""A tiny run of `make bench`'s harness: every scenario runs and reports its rows.

Figures from sizes this small mean nothing, so nothing here looks at them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "BENCH_PAIRS": "1",
    "BENCH_SECONDS": "1",
    "BENCH_CONNECTIONS": "4",
    "BENCH_ENGINE_JOBS": "300",
    "BENCH_MEMORY_JOBS": "300",
    "BENCH_RETENTION_JOBS": "1000",
    "BENCH_RETAIN_FINISHED": "100",
    "BENCH_UTIL_SECONDS": "0.6",
    "BENCH_UTIL_WARMUP": "0.2",
    "BENCH_UTIL_RUNS": "1",
    "BENCH_LATENCY_JOBS": "20",
    "BENCH_LATENCY_RUNS": "1",
    "BENCH_SCHEDULED_JOBS": "1000",
    "BENCH_IDLE_SECONDS": "0.2",
}


def test_the_harness_runs_every_scenario_and_prints_a_table_and_json() -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (make bench installs it)")
    done = subprocess.run(
        [sys.executable, "-m", "bench.run"],
        cwd=ROOT,
        env={**os.environ, **TINY},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].split(" | ")[0].strip() == "scenario"
    report = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    rows = {(r["scenario"], r["metric"]) for r in report["rows"]}
    assert {
        ("enqueue 202", "requests_per_s"),
        ("enqueue 202", "p99_ms"),
        ("enqueue 429", "requests_per_s"),
        ("engine no HTTP", "jobs_per_s"),
        ("engine via HTTP", "jobs_per_s"),
        ("memory", "bytes_per_retained_job"),
        ("memory", "rss_at_1000_jobs"),
        ("utilisation", "workers_4"),
        ("utilisation", "workers_200"),
        ("latency enqueue→started", "p99_ms"),
        ("scheduled 1M", "bytes_per_scheduled_job"),
        ("scheduled 1M", "idle_cpu_share"),
        ("engine, 100 waiters", "jobs_per_cpu_s"),
    } <= rows
    targets = [r for r in report["rows"] if r["target"]]
    assert all(r["met"] in (True, False) for r in targets)
