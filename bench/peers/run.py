"""`make bench-peers`: kasp, pgqueuer and procrastinate burning down the same jobs.

Every system gets the same no-op burn-down on the same PostgreSQL, each run in a
fresh database that this script creates and drops:

1. `setup`: the system installs its schema;
2. `enqueue`: N jobs through the system's own batch API (phases.CHUNK a call);
3. ANALYZE, in the runs "with ANALYZE" (this server has autovacuum off, so
   without it the planner knows nothing of the N queued rows);
4. `process`: the system's worker, its recommended settings, CONCURRENCY jobs at
   once, until all N are done.

kasp runs twice: in process (kasp_burn.py: build_parts, Engine.enqueue, the
WorkerPool) and over HTTP (a real kasp server started here, POST /enqueue from
kasp_burn.py's client; its workers run from the first request, so its
"processing" is the drain rate of what is left once the posting ends).

The systems alternate (A B C D A B C D ...) for BENCH_PEERS_ROUNDS rounds, each
phase in a fresh process, and the table shows medians and the median of the
per-round ratios to pgqueuer. The machine is shared: compare rows of one run.
Database work per job comes from pgwork.py. Sizes: BENCH_PEERS_JOBS (50,000),
BENCH_PEERS_ROUNDS (3), BENCH_PEERS_SYSTEMS, BENCH_PEERS_ANALYZE (`off,on`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from kasp_burn import environment  # noqa: E402
from pgwork import (  # noqa: E402
    Counters,
    WalReader,
    counters,
    hold_wal,
    lsn_bytes,
    prepare_statements,
    release_wal,
    reset_statements,
    statements_available,
    top_statements,
    wait_for_no_backends,
)

from tests.support.postgres import create_database, drop_database, dsn_for  # noqa: E402

ADMIN_DSN = os.environ.get("KASP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PEERS_PYTHON = os.environ.get("BENCH_PEERS_PYTHON", str(ROOT / ".venv-peers" / "bin" / "python"))
JOBS = int(os.environ.get("BENCH_PEERS_JOBS", "50000"))
ROUNDS = int(os.environ.get("BENCH_PEERS_ROUNDS", "3"))
SYSTEMS = os.environ.get("BENCH_PEERS_SYSTEMS", "pgqueuer,procrastinate,kasp,kasp-http").split(",")
ANALYZE = [mode == "on" for mode in os.environ.get("BENCH_PEERS_ANALYZE", "off,on").split(",")]

#: Which interpreter and runner each system's phases use.
RUNNERS = {
    "pgqueuer": (PEERS_PYTHON, HERE / "pgqueuer_burn.py"),
    "procrastinate": (PEERS_PYTHON, HERE / "procrastinate_burn.py"),
    "kasp": (sys.executable, HERE / "kasp_burn.py"),
    "kasp-http": (sys.executable, HERE / "kasp_burn.py"),
}
LABELS = {
    "pgqueuer": "pgqueuer 1.6.0",
    "procrastinate": "procrastinate 3.10.0",
    "kasp": "kasp in process",
    "kasp-http": "kasp over HTTP",
}
#: Issue 12's targets for kasp against pgqueuer (ratio of medians of the same rounds).
TARGETS: dict[tuple[str, str], tuple[str, Callable[[float], bool]]] = {
    ("kasp", "processing"): ("≥ 1.2x", lambda r: r >= 1.2),
    ("kasp-http", "end_to_end"): ("≥ 1.0x", lambda r: r >= 1.0),
    ("kasp", "wal_per_job"): ("≤ 1.0x", lambda r: r <= 1.0),
}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Run:
    system: str
    analyze: bool
    round: int
    jobs: int
    enqueue_s: float
    #: jobs/s of the processing phase (over HTTP: the drain once posting ended; None if nothing was left)
    processing: float | None
    end_to_end_s: float
    wal_db: int | None
    wal_cluster: int
    rows: int
    commits: int
    statements: list[dict[str, object]]

    def metrics(self) -> dict[str, float | None]:
        n = self.jobs
        return {
            "processing": self.processing,
            "enqueue": n / self.enqueue_s,
            "end_to_end": n / self.end_to_end_s,
            "wal_per_job": self.wal_db / n if self.wal_db is not None else None,
            "wal_cluster_per_job": self.wal_cluster / n,
            "rows_per_job": self.rows / n,
            "commits_per_job": self.commits / n,
        }


class Context:
    """What every run needs: the admin connection, the WAL reader, pg_stat_statements."""

    def __init__(self, admin: asyncpg.Connection, wal: WalReader, statements: bool) -> None:
        self.admin = admin
        self.wal = wal
        self.statements = statements


async def phase(system: str, name: str, dsn: str, jobs: int = 0, *extra: str) -> dict[str, Any]:
    python, script = RUNNERS[system]
    proc = await asyncio.create_subprocess_exec(
        python,
        str(script),
        name,
        *(("--dsn", dsn) if dsn else ()),
        "--jobs",
        str(jobs),
        *extra,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120 + jobs / 20)
    except BaseException:  # a timeout, or the harness stopped: no runner outlives it
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{system} {name} exited {proc.returncode}:\n{err.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def settle(ctx: Context, db: str) -> Counters:
    await wait_for_no_backends(ctx.admin, db)
    return await counters(ctx.admin, db)


async def analyze(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def work(ctx: Context, oid: int, spans: list[tuple[Counters, Counters]]) -> dict[str, int | None]:
    """Database work over the spans of a run (the ANALYZE between them left out)."""
    wal_db: int | None = 0
    for a, b in spans:
        part = await asyncio.to_thread(ctx.wal.database_bytes, oid, a.lsn, b.lsn)
        wal_db = None if part is None or wal_db is None else wal_db + part
    return {
        "wal_db": wal_db,
        "wal_cluster": sum([await lsn_bytes(ctx.admin, a.lsn, b.lsn) for a, b in spans]),
        "rows": sum(b.rows_written - a.rows_written for a, b in spans),
        "commits": sum(b.commits - a.commits for a, b in spans),
    }


async def burn(ctx: Context, system: str, with_analyze: bool, rnd: int) -> Run:
    db = f"kasp_peers_{system.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    await create_database(ADMIN_DSN, db)
    try:
        dsn = dsn_for(ADMIN_DSN, db)
        oid = int(await ctx.admin.fetchval("SELECT oid FROM pg_database WHERE datname = $1", db))
        if ctx.statements:
            await prepare_statements(dsn)
        # Every run starts right after a checkpoint, so each pays the same full-page images in WAL
        # and none meets a timed checkpoint (checkpoint_timeout) halfway through.
        await ctx.admin.execute("CHECKPOINT")
        if system == "kasp-http":
            return await burn_http(ctx, dsn, db, oid, with_analyze, rnd)
        await phase(system, "setup", dsn)
        if ctx.statements:
            await reset_statements(dsn, oid)
        before = await settle(ctx, db)
        enqueued = await phase(system, "enqueue", dsn, JOBS)
        after_enqueue = await settle(ctx, db)
        if with_analyze:
            await analyze(dsn)
        before_process = await settle(ctx, db)
        processed = await phase(system, "process", dsn, JOBS)
        if processed["processed"] != JOBS:
            raise RuntimeError(f"{system} processed {processed['processed']} of {JOBS} jobs")
        end = await settle(ctx, db)
        spent = await work(ctx, oid, [(before, after_enqueue), (before_process, end)])
        return Run(
            system,
            with_analyze,
            rnd,
            JOBS,
            enqueued["seconds"],
            JOBS / processed["seconds"],
            enqueued["seconds"] + processed["seconds"],
            spent["wal_db"],
            spent["wal_cluster"] or 0,
            spent["rows"] or 0,
            spent["commits"] or 0,
            await top_statements(dsn, oid) if ctx.statements else [],
        )
    finally:
        await drop_database(ADMIN_DSN, db)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _done(url: str) -> int:
    with urllib.request.urlopen(url + "/stats", timeout=10) as r:
        jobs = json.loads(r.read())["jobs"]
    return int(jobs["done"]) + int(jobs["failed"])


def start_server(dsn: str, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "sanic", "service.app:create_app", "--factory", "--single-process"]
    return subprocess.Popen(
        [*cmd, "--no-motd", "-H", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env={**os.environ, **environment(dsn), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


async def wait_until_serving(server: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            err = server.stderr.read().decode() if server.stderr else ""
            raise RuntimeError(f"kasp exited {server.returncode}: {err[-2000:]}")
        try:
            _done(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("kasp did not answer /stats within 60 s") from None
            await asyncio.sleep(0.05)


async def burn_http(ctx: Context, dsn: str, db: str, oid: int, with_analyze: bool, rnd: int) -> Run:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(dsn, port)
    try:
        await wait_until_serving(server, url)
        if ctx.statements:
            await reset_statements(dsn, oid)
        before = await counters(ctx.admin, db)  # kasp's connections stay open: its schema is in
        posted = await phase("kasp-http", "enqueue-http", "", JOBS, "--url", url)
        left_at, done_then = time.time(), _done(url)
        if with_analyze:
            await analyze(dsn)  # the workers are draining the backlog meanwhile
        while (done := _done(url)) < JOBS:
            if time.time() - left_at > 60 + JOBS / 20:
                raise RuntimeError(f"kasp over HTTP finished {done} of {JOBS} jobs")
            await asyncio.sleep(0.02)
        finished_at = time.time()
    finally:
        stop_server(server)
    end = await settle(ctx, db)
    spent = await work(ctx, oid, [(before, end)])
    statements = await top_statements(dsn, oid) if ctx.statements else []
    return Run(
        "kasp-http",
        with_analyze,
        rnd,
        JOBS,
        posted["seconds"],
        (JOBS - done_then) / (finished_at - left_at) if done_then < JOBS else None,
        finished_at - posted["began_at"],
        spent["wal_db"],
        spent["wal_cluster"] or 0,
        spent["rows"] or 0,
        spent["commits"] or 0,
        statements,
    )


# -- the report -----------------------------------------------------------------

COLUMNS = [
    ("processing", "processing jobs/s"),
    ("enqueue", "enqueue/s"),
    ("end_to_end", "end to end jobs/s"),
    ("wal_per_job", "WAL B/job"),
    ("wal_cluster_per_job", "WAL B/job (cluster)"),
    ("rows_per_job", "rows/job"),
    ("commits_per_job", "commits/job"),
]


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarise(runs: list[Run]) -> dict[str, Any]:
    """Medians per (ANALYZE, system) and median per-round ratios of each kasp to pgqueuer."""
    out: dict[str, Any] = {}
    for with_analyze in ANALYZE:
        mode = "analyze" if with_analyze else "no_analyze"
        of_mode = [r for r in runs if r.analyze == with_analyze]
        medians = {
            s: {k: _median([r.metrics()[k] for r in of_mode if r.system == s]) for k, _ in COLUMNS}
            for s in SYSTEMS
        }
        ratios: dict[str, dict[str, float | None]] = {}
        base = {r.round: r.metrics() for r in of_mode if r.system == "pgqueuer"}
        for s in (s for s in SYSTEMS if s != "pgqueuer" and base):
            ratios[s] = {}
            for k, _ in COLUMNS[:4]:
                per_round: list[float | None] = []
                for r in (r for r in of_mode if r.system == s):
                    mine, theirs = r.metrics()[k], base.get(r.round, {}).get(k)
                    per_round.append(mine / theirs if mine is not None and theirs else None)
                ratios[s][k] = _median(per_round)
        out[mode] = {"medians": medians, "ratios_to_pgqueuer": ratios}
    return out


def table(summary: dict[str, Any]) -> str:
    lines: list[str] = []
    for mode, part in summary.items():
        title = "with ANALYZE after enqueue" if mode == "analyze" else "without ANALYZE (no statistics)"
        lines.append(f"\n{JOBS:,} no-op jobs, {ROUNDS} rounds, medians; {title}")
        head = ["system", *(label for _, label in COLUMNS)]
        rows = [head]
        for s, m in part["medians"].items():
            rows.append([LABELS[s], *(_fmt(m[k]) for k, _ in COLUMNS)])
        for s, ratio in part["ratios_to_pgqueuer"].items():
            ratios = (f"{ratio[k]:.2f}x" if ratio[k] is not None else "-" for k, _ in COLUMNS[:4])
            rows.append([f"{LABELS[s]} / pgqueuer", *ratios, "", "", ""])
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines.append(" | ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)))
        lines.append("-+-".join("-" * w for w in widths))
        lines.extend(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows[1:])
        for (s, k), (target, check) in TARGETS.items():
            ratio = part["ratios_to_pgqueuer"].get(s, {}).get(k)
            if ratio is not None:
                met = "met" if check(ratio) else "NOT met"
                lines.append(f"target {LABELS[s]} {k} vs pgqueuer {target}: {ratio:.2f}x, {met}")
    return "\n".join(lines)


def statements_report(runs: list[Run]) -> str:
    lines = []
    for r in runs:
        if r.round == 1 and r.statements:
            title = f"\ntop statements by total time, {LABELS[r.system]} (round 1, ANALYZE {r.analyze}):"
            lines.append(title)
            for st in r.statements:
                calls, ms, wal, query = st["calls"], st["ms"], st["wal_bytes"], st["query"]
                lines.append(f"  {calls:>8} calls {ms:>10} ms {wal:>12} WAL B  {query}")
    return "\n".join(lines)


async def measure() -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        version = int(await admin.fetchval("SHOW server_version_num"))
        wal = WalReader.locate(version, await admin.fetchval("SHOW data_directory"))
        statements = await statements_available(admin)
        ctx = Context(admin, wal, statements)
        say(f"bench-peers: {JOBS} jobs, {ROUNDS} rounds, systems {SYSTEMS}, ANALYZE {ANALYZE}")
        say("  per-database WAL: " + ("pg_waldump" if not wal.problem else f"unavailable ({wal.problem})"))
        if not statements:
            say("  pg_stat_statements: unavailable (not in shared_preload_libraries; needs a server restart)")
        runs: list[Run] = []
        began = time.monotonic()
        for rnd in range(1, ROUNDS + 1):
            for with_analyze in ANALYZE:
                for system in SYSTEMS:
                    await hold_wal(admin)
                    try:
                        run = await burn(ctx, system, with_analyze, rnd)
                    finally:
                        await release_wal(admin)
                    m = run.metrics()
                    say(
                        f"  round {rnd} ANALYZE={'on' if with_analyze else 'off'} {system}: "
                        + " ".join(f"{k}={_fmt(v)}" for k, v in m.items())
                    )
                    runs.append(run)
        for failure in wal.failures:
            say(f"  per-database WAL of a run is missing: {failure}")
    finally:
        await admin.close()
    summary = summarise(runs)
    print(table(summary))
    if not statements:
        print("\npg_stat_statements: unavailable (the server does not preload it), no top statements")
    else:
        print(statements_report(runs))
    report = {
        "seconds": round(time.monotonic() - began, 1),
        "jobs": JOBS,
        "rounds": ROUNDS,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
    print("PEERS_JSON " + json.dumps(report))


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)  # unwinds the runs: their databases are dropped, their processes stopped


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if not Path(PEERS_PYTHON).exists() and {"pgqueuer", "procrastinate"} & set(SYSTEMS):
        raise SystemExit(f"bench-peers: {PEERS_PYTHON} is missing; `make bench-peers` creates .venv-peers")
    asyncio.run(measure())


if __name__ == "__main__":
    main()
