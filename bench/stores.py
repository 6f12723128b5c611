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

Targets (issue 4): SQLite enqueue >= 1/3 of memory's; PostgreSQL with two
processes >= 1.6x the jobs/s of one. The machine is shared and noisy: compare
rows of one run, not runs. Needs wrk (apt-get install wrk) and PostgreSQL on
127.0.0.1:5432 (.ci/start-postgres). Usage: python bench/stores.py
"""

from __future__ import annotations

import asyncio
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.postgres import create_database, drop_database, dsn_for  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
WORKERS = os.environ.get("BENCH_WORKERS", "8")
PG_ADMIN_DSN = os.environ.get("KASP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# One wrk thread (-t1): a per-thread counter makes ids unique within a run.
LUA = """
local counter = 0
local headers = { ["Content-Type"] = "application/json" }
request = function()
  counter = counter + 1
  return wrk.format("POST", "/enqueue", headers, '{"id":"j' .. counter .. '","payload":"p"}')
end
"""


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


def start_service(store: str, processes: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "STORE": store,
        "WORKERS": WORKERS,
        "QUEUE_SIZE": "10000000",
        "WORK_MIN_MS": "0",
        "WORK_MAX_MS": "0",
        "ERROR_RATE": "0",
        "LOG_LEVEL": "WARNING",
    }
    mode = ["--single-process"] if processes == 1 else ["--workers", str(processes)]
    cmd = [sys.executable, "-m", "sanic", "service.app:create_app", "--factory", *mode]
    proc = subprocess.Popen(
        [*cmd, "-H", "127.0.0.1", "-p", str(port), "--no-motd"],
        env=env,
        cwd=ROOT,
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
    raise RuntimeError(f"kasp with STORE={store} did not become ready")


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


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/stores.py needs wrk: apt-get install wrk")
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "enqueue.lua"
        lua.write_text(LUA)
        results.append(measure("memory", "memory", 1, lua))
        results.append(measure("sqlite", f"sqlite:///{tmp}/kasp.db", 1, lua))
        for processes in (1, 2):
            name = f"kasp_bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(create_database(PG_ADMIN_DSN, name))
            try:
                label = f"postgresql x{processes}"
                results.append(measure(label, dsn_for(PG_ADMIN_DSN, name), processes, lua))
            finally:
                asyncio.run(drop_database(PG_ADMIN_DSN, name))

    print(f"\nkasp stores, no-op processor, WORKERS={WORKERS}, wrk -t1 -c{CONNECTIONS} -d{SECONDS:g}s")
    print(f"{'store':<16}{'enqueue req/s':>15}{'jobs/s':>10}{'accepted':>10}{'non-2xx':>9}")
    for r in results:
        print(f"{r.name:<16}{r.enqueue_per_s:>15.0f}{r.jobs_per_s:>10.0f}{r.accepted:>10}{r.rejected:>9}")
    by_name = {r.name: r for r in results}
    sqlite_ratio = by_name["sqlite"].enqueue_per_s / by_name["memory"].enqueue_per_s
    pg_ratio = by_name["postgresql x2"].jobs_per_s / by_name["postgresql x1"].jobs_per_s
    print(f"\nSQLite enqueue / memory enqueue: {sqlite_ratio:.2f} (target >= 0.33)")
    print(f"PostgreSQL jobs/s, 2 processes / 1: {pg_ratio:.2f} (target >= 1.6)")


if __name__ == "__main__":
    main()
