"""`make bench-stores`: what durability costs, store by store.

For each store (memory, SQLite, PostgreSQL with one and with two Sanic
worker processes) this starts kasp itself (the Sanic CLI: `create_app`, whose
parts come from `service/parts.py` build_parts) with a no-op processor
(WORK_MIN_MS=0 WORK_MAX_MS=0 ERROR_RATE=0), drives POST /enqueue with wrk
for BENCH_SECONDS, waits until every accepted job is done, and prints:

- enqueue req/s: accepted (202) requests per second of the wrk run, with the
  workers running the jobs at the same time (a durable 202 is on disk);
- jobs/s: accepted jobs / seconds from the first request until the last job
  is `done` (end to end: enqueue, claim, run, record the outcome).

Then the durable end-to-end rows of issue 12 (item 4): PostgreSQL with one and
two processes, WORKERS=32 (BENCH_BATCH_WORKERS), the jobs posted by wrk as POST
/enqueue/batch of 100 for BENCH_SECONDS; besides jobs/s they print how busy
each process was over the run (CPU-seconds / wall seconds, 1.0 = one whole
core): kasp (every process of its session), its PostgreSQL backends, and wrk.

Targets (issue 4): SQLite enqueue >= 1/3 of memory's; PostgreSQL with two
processes >= 1.6x the jobs/s of one. Issue 12: >= 8,000 jobs/s end to end with
one PostgreSQL instance through /enqueue/batch, >= 1.6x that with two. The
machine is shared and noisy: compare rows of one run, not runs. Needs wrk
(apt-get install wrk) and PostgreSQL on 127.0.0.1:5432 (.ci/start-postgres).
Usage: python bench/stores.py. BENCH_STORES_ONLY=batch prints only issue 12's rows;
BENCH_STORES_ROOT=DIR runs the service from another checkout (A/B, alternating).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.postgres import create_database, drop_database, dsn_for  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
WORKERS = os.environ.get("BENCH_WORKERS", "8")
PG_ADMIN_DSN = os.environ.get("KASP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH_WORKERS = os.environ.get("BENCH_BATCH_WORKERS", "32")
ONLY = os.environ.get("BENCH_STORES_ONLY", "")  # "batch": only the /enqueue/batch rows
SERVICE_ROOT = Path(os.environ.get("BENCH_STORES_ROOT", ROOT))  # the checkout whose service runs
BATCH_CONNECTIONS = 8  # as bench/batch.py: enough to keep one batch in commit while the next is parsed
TICKS = os.sysconf("SC_CLK_TCK")

# One wrk thread (-t1): a per-thread counter makes ids unique within a run.
LUA = """
local counter = 0
local headers = { ["Content-Type"] = "application/json" }
request = function()
  counter = counter + 1
  return wrk.format("POST", "/enqueue", headers, '{"id":"j' .. counter .. '","payload":"p"}')
end
"""

# POST /enqueue/batch of `size` jobs with 100-byte payloads; one wrk thread (-t1), so a
# per-thread counter makes ids unique within a run. bench/batch.py's load too.
BATCH_LUA = """
local counter = 0
local payload = string.rep("p", 100)
local headers = { ["Content-Type"] = "application/json" }
request = function()
  local jobs = {}
  for i = 1, %(size)d do
    counter = counter + 1
    jobs[i] = '{"id":"b' .. counter .. '","payload":"' .. payload .. '","max_retries":%(max_retries)d}'
  end
  return wrk.format("POST", "/enqueue/batch", headers, '{"jobs":[' .. table.concat(jobs, ",") .. ']}')
end
"""


def batch_lua(size: int, max_retries: int) -> str:
    return BATCH_LUA % {"size": size, "max_retries": max_retries}


@dataclass
class Result:
    name: str
    enqueue_per_s: float
    jobs_per_s: float
    accepted: int
    rejected: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as r:
        data: dict[str, object] = json.loads(r.read())
        return data


def launch(
    settings: dict[str, str],
    *,
    processes: int = 1,
    root: Path = SERVICE_ROOT,
    prefix: Sequence[str] = (),
) -> tuple[subprocess.Popen[bytes], str]:
    """kasp through the Sanic CLI (as SPEC runs it) from checkout `root`, with `settings` over
    the environment, in `processes` processes (manager mode when more than one), behind `prefix`
    (e.g. taskset); once /readyz answers: (the process, its URL). The one launcher of bench/'s
    stores, batch and pg_costs benchmarks."""
    port = free_port()
    env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(root), **settings}
    mode = ["--single-process"] if processes == 1 else ["--workers", str(processes)]
    cmd = [*prefix, sys.executable, "-m", "sanic", "service.app:create_app", "--factory", *mode]
    proc = subprocess.Popen(
        [*cmd, "-H", "127.0.0.1", "-p", str(port), "--no-motd"],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            get_json(url + "/readyz")
            time.sleep(1.0 if processes > 1 else 0.3)  # manager mode: let every worker come up
            return proc, url
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"kasp with STORE={settings.get('STORE')} did not become ready")


def start_service(store: str, processes: int, workers: str = WORKERS) -> tuple[subprocess.Popen[bytes], str]:
    """kasp with a no-op processor and room for every job: the end-to-end runs."""
    no_op = {"WORK_MIN_MS": "0", "WORK_MAX_MS": "0", "ERROR_RATE": "0", "QUEUE_SIZE": "10000000"}
    return launch({"STORE": store, "WORKERS": workers, **no_op}, processes=processes)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the main process: it forwards to workers
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_wrk(url: str, lua: Path) -> tuple[int, int]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS:g}s", "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rejected = int(non2xx.group(1)) if non2xx else 0
    return total - rejected, rejected


def measure(name: str, store: str, processes: int, lua: Path) -> Result:
    proc, url = start_service(store, processes)
    try:
        began = time.monotonic()
        accepted, rejected = run_wrk(url, lua)
        wrk_s = time.monotonic() - began
        while True:
            jobs = get_json(url + "/stats")["jobs"]
            assert isinstance(jobs, dict)
            if jobs["done"] >= accepted:
                break
            time.sleep(0.02)
        total_s = time.monotonic() - began
        return Result(name, accepted / wrk_s, accepted / total_s, accepted, rejected)
    finally:
        stop(proc)


def _cpu_s(stat: Path) -> tuple[int, float]:
    """(session id, utime + stime in seconds) of one /proc/PID/stat."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[3]), (int(fields[11]) + int(fields[12])) / TICKS


def session_cpu_s(sid: int) -> float:
    """CPU of every live process of a session (kasp's main process and its Sanic workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            session, cpu = _cpu_s(stat)
        except (OSError, ValueError, IndexError):
            continue
        total += cpu if session == sid else 0.0
    return total


async def backend_cpu_s(db: str) -> float:
    """CPU of the server backends connected to `db` (read while kasp still holds them)."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        pids = [r[0] for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", db)]
    finally:
        await conn.close()
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # another host's server (KASP_TEST_PG elsewhere): not counted
            total += _cpu_s(Path(f"/proc/{pid}/stat"))[1]
    return total


@dataclass
class BatchResult:
    name: str
    jobs_per_s: float
    accepted: int
    kasp_busy: float
    postgres_busy: float
    wrk_busy: float


def measure_batch(name: str, db: str, processes: int, lua: Path) -> BatchResult:
    """PostgreSQL end to end, jobs posted as /enqueue/batch of 100 (issue 12, item 4)."""
    proc, url = start_service(dsn_for(PG_ADMIN_DSN, db), processes, BATCH_WORKERS)
    try:
        kasp0, pg0, wrk0 = session_cpu_s(proc.pid), asyncio.run(backend_cpu_s(db)), _children_cpu_s()
        began = time.monotonic()
        cmd = ["wrk", "-t1", f"-c{BATCH_CONNECTIONS}", f"-d{SECONDS:g}s", "-s", str(lua), url]
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        wrk1 = _children_cpu_s()
        accepted = 0
        while True:
            jobs = get_json(url + "/stats")["jobs"]
            assert isinstance(jobs, dict)
            accepted = sum(jobs.values())
            if jobs["done"] >= accepted:
                break
            time.sleep(0.02)
        total_s = time.monotonic() - began
        kasp1, pg1 = session_cpu_s(proc.pid), asyncio.run(backend_cpu_s(db))
        return BatchResult(
            name,
            accepted / total_s,
            accepted,
            (kasp1 - kasp0) / total_s,
            (pg1 - pg0) / total_s,
            (wrk1 - wrk0) / total_s,
        )
    finally:
        stop(proc)


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/stores.py needs wrk: apt-get install wrk")
    results: list[Result] = []
    batched: list[BatchResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "enqueue.lua"
        lua.write_text(LUA)
        batch_script = Path(tmp) / "batch.lua"
        batch_script.write_text(batch_lua(100, max_retries=0))
        for processes in () if ONLY == "batch" else (1, 2):
            name = f"kasp_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(create_database(PG_ADMIN_DSN, name))
            if processes == 1:
                results.append(measure("memory", "memory", 1, lua))
                results.append(measure("sqlite", f"sqlite:///{tmp}/kasp.db", 1, lua))
            try:
                label = f"postgresql x{processes}"
                results.append(measure(label, dsn_for(PG_ADMIN_DSN, name), processes, lua))
            finally:
                asyncio.run(drop_database(PG_ADMIN_DSN, name))
        for processes in (1, 2):
            name = f"kasp_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(create_database(PG_ADMIN_DSN, name))
            try:
                batched.append(measure_batch(f"postgresql x{processes}", name, processes, batch_script))
            finally:
                asyncio.run(drop_database(PG_ADMIN_DSN, name))

    if results:
        print_enqueue_rows(results)
    print_batch_rows(batched)


def print_enqueue_rows(results: list[Result]) -> None:
    print(f"\nkasp stores, no-op processor, WORKERS={WORKERS}, wrk -t1 -c{CONNECTIONS} -d{SECONDS:g}s")
    print(f"{'store':<16}{'enqueue req/s':>15}{'jobs/s':>10}{'accepted':>10}{'non-2xx':>9}")
    for r in results:
        print(f"{r.name:<16}{r.enqueue_per_s:>15.0f}{r.jobs_per_s:>10.0f}{r.accepted:>10}{r.rejected:>9}")
    by_name = {r.name: r for r in results}
    sqlite_ratio = by_name["sqlite"].enqueue_per_s / by_name["memory"].enqueue_per_s
    pg_ratio = by_name["postgresql x2"].jobs_per_s / by_name["postgresql x1"].jobs_per_s
    print(f"\nSQLite enqueue / memory enqueue: {sqlite_ratio:.2f} (target >= 0.33)")
    print(f"PostgreSQL jobs/s, 2 processes / 1: {pg_ratio:.2f} (target >= 1.6)")


def print_batch_rows(batched: list[BatchResult]) -> None:

    print(
        f"\nPostgreSQL end to end, /enqueue/batch of 100 (wrk -t1 -c{BATCH_CONNECTIONS} -d{SECONDS:g}s), "
        f"WORKERS={BATCH_WORKERS}; busy = CPU-s / wall-s (1.0 = one core)"
    )
    print(f"{'store':<16}{'jobs/s':>10}{'accepted':>10}{'kasp busy':>11}{'PG busy':>9}{'wrk busy':>10}")
    for b in batched:
        print(
            f"{b.name:<16}{b.jobs_per_s:>10.0f}{b.accepted:>10}{b.kasp_busy:>11.2f}{b.postgres_busy:>9.2f}"
            f"{b.wrk_busy:>10.2f}"
        )
    x1, x2 = batched
    print(
        f"x1 jobs/s: {x1.jobs_per_s:.0f} (target >= 8000); "
        f"x2 / x1: {x2.jobs_per_s / x1.jobs_per_s:.2f} (target >= 1.6)"
    )


if __name__ == "__main__":
    main()
