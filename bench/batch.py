"""Jobs admitted per second through POST /enqueue/batch, batches of 100, on each store (issue 12).

For each store this starts kasp (one process, server on CPU 0, wrk on CPU 1 when
there are two), posts batches of BENCH_BATCH_SIZE (100) new jobs with a 100-byte
payload from `wrk -t1 -c BENCH_BATCH_CONNECTIONS (8)` for BENCH_SECONDS (5), and
prints the jobs admitted per second: jobs the store holds afterwards ÷ the wrk
run's seconds, and the server's CPU time per job admitted (user + system, from
/proc; what load on a shared machine moves least, for A/B comparisons).
Admission is measured alone: WORKERS=1 and each simulated attempt
lasts WORK_MIN_MS=WORK_MAX_MS=3600000 (an hour), so one job runs and the rest
wait, and no claim competes with the batches for the store's commits.

Targets: ≥ 50,000 jobs/s on memory, ≥ 20,000 on SQLite and PostgreSQL. The
machine is shared and noisy: compare rows of one run. Needs wrk and PostgreSQL
on 127.0.0.1:5432 (.ci/start-postgres). Usage: python bench/batch.py
(BENCH_BATCH_STORES=memory,sqlite,postgresql picks the stores).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import CLIENT_PIN, SERVER_PIN  # noqa: E402
from bench.stores import PG_ADMIN_DSN, batch_lua, get_json, launch, stop  # noqa: E402
from tests.support.postgres import create_database, drop_database, dsn_for  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_BATCH_CONNECTIONS", "8"))
BATCH_SIZE = int(os.environ.get("BENCH_BATCH_SIZE", "100"))
TARGETS = {"memory": 50_000, "sqlite": 20_000, "postgresql": 20_000}  # issue 12, jobs/s
STORES = os.environ.get("BENCH_BATCH_STORES", ",".join(TARGETS)).split(",")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start_service(store: str) -> tuple[subprocess.Popen[bytes], str]:
    """kasp admitting only: one worker on an hour-long attempt, so no claim competes."""
    settings = {
        "STORE": store,
        "WORKERS": "1",
        "WORK_MIN_MS": "3600000",
        "WORK_MAX_MS": "3600000",
        "ERROR_RATE": "0",
        "QUEUE_SIZE": "10000000",
        "SHUTDOWN_TIMEOUT": "0.1",
    }
    return launch(settings, root=ROOT, prefix=SERVER_PIN)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (taskset execs the server: same pid)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def measure(store: str, lua: Path) -> tuple[float, int, int, float]:
    """(jobs admitted per second, jobs admitted, non-2xx responses, server CPU µs per job)."""
    proc, url = start_service(store)
    try:
        cmd = [*CLIENT_PIN, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS:g}s", "-s", str(lua), url]
        cpu_began = cpu_seconds(proc.pid)
        began = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(proc.pid) - cpu_began
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        jobs = get_json(url + "/stats")["jobs"]
        assert isinstance(jobs, dict)
        admitted = sum(jobs.values())
        return (
            admitted / elapsed,
            admitted,
            int(non2xx.group(1)) if non2xx else 0,
            cpu * 1e6 / max(1, admitted),
        )
    finally:
        stop(proc)


def main() -> None:
    rows: list[tuple[str, float, int, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "batch.lua"
        lua.write_text(batch_lua(BATCH_SIZE, max_retries=3))
        if "memory" in STORES:
            rows.append(("memory", *measure("memory", lua)))
        if "sqlite" in STORES:
            rows.append(("sqlite", *measure(f"sqlite:///{tmp}/kasp.db", lua)))
        if "postgresql" in STORES:
            name = f"kasp_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(create_database(PG_ADMIN_DSN, name))
            try:
                rows.append(("postgresql", *measure(dsn_for(PG_ADMIN_DSN, name), lua)))
            finally:
                asyncio.run(drop_database(PG_ADMIN_DSN, name))
    print(
        f"\nPOST /enqueue/batch, {BATCH_SIZE} jobs a batch, wrk -t1 -c{CONNECTIONS} -d{SECONDS:g}s, "
        "admission alone (WORKERS=1, hour-long attempts)"
    )
    print(f"{'store':<12}{'jobs/s':>10}{'admitted':>10}{'non-2xx':>9}{'cpu µs/job':>12}{'target':>10}  met")
    for store, per_s, admitted, non2xx, cpu_us in rows:
        target = TARGETS[store]
        met = "yes" if per_s >= target and non2xx == 0 else "NO"
        print(
            f"{store:<12}{per_s:>10,.0f}{admitted:>10}{non2xx:>9}{cpu_us:>12.1f}"
            f"{'≥ ' + format(target, ','):>10}  {met}"
        )


if __name__ == "__main__":
    main()
