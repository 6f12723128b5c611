"""A tiny run of `make bench-peers`' harness (bench/peers/run.py) on the real PostgreSQL.

Figures from 50 jobs mean nothing, so nothing here looks at their size: these
tests check that every system burns down every job (the harness fails a run
that leaves one), in both ANALYZE modes, and that the database work is counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
TINY = {"BENCH_PEERS_JOBS": "50", "BENCH_PEERS_ROUNDS": "1", "BENCH_PEERS_ANALYZE": "off,on"}


def run_harness(systems: str) -> tuple[dict[str, Any], str, str]:
    done = subprocess.run(
        [sys.executable, "bench/peers/run.py"],
        cwd=ROOT,
        env={**os.environ, **TINY, "BENCH_PEERS_SYSTEMS": systems, "BENCH_PEERS_PYTHON": str(PEERS_PYTHON)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.splitlines()[-1]
    return json.loads(last.removeprefix("PEERS_JSON ")), done.stdout, done.stderr


def check_runs(report: dict[str, Any], stderr: str, systems: list[str]) -> None:
    runs = report["runs"]
    assert sorted((r["system"], r["analyze"]) for r in runs) == sorted(
        (s, a) for s in systems for a in (False, True)
    )
    per_db_wal = "per-database WAL: pg_waldump" in stderr
    for r in runs:
        assert r["jobs"] == 50
        assert r["enqueue_s"] > 0 and r["end_to_end_s"] > 0
        # Over HTTP the workers may finish all 50 jobs before the posting ends: no drain to time.
        if r["processing"] is None:
            assert r["system"] == "kasp-http", r
        else:
            assert r["processing"] > 0, r
        assert r["rows"] >= 50, r  # every system writes at least one row a job
        assert r["commits"] > 0, r
        assert r["wal_cluster"] > 0, r
        if per_db_wal:
            assert r["wal_db"] is not None and r["wal_db"] > 0, r
    for mode in ("no_analyze", "analyze"):
        assert set(report["summary"][mode]["medians"]) == set(systems)


def test_the_peers_harness_burns_down_kasp_in_process_and_over_http() -> None:
    report, stdout, stderr = run_harness("kasp,kasp-http")
    check_runs(report, stderr, ["kasp", "kasp-http"])
    assert "kasp over HTTP" in stdout and "with ANALYZE after enqueue" in stdout


def test_the_peers_harness_runs_pgqueuer_and_procrastinate_beside_kasp() -> None:
    if not PEERS_PYTHON.exists():
        pytest.skip(".venv-peers is absent (`make bench-peers` creates it; that needs PyPI)")
    report, stdout, stderr = run_harness("pgqueuer,procrastinate,kasp")
    check_runs(report, stderr, ["pgqueuer", "procrastinate", "kasp"])
    ratios = report["summary"]["analyze"]["ratios_to_pgqueuer"]
    assert set(ratios) == {"procrastinate", "kasp"}
    assert all(ratios["kasp"][k] is not None for k in ("processing", "enqueue", "end_to_end"))
    assert "kasp in process / pgqueuer" in stdout
