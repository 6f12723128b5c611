"""`python bench/pg_costs.py`: what a job costs kasp and PostgreSQL, in figures load does not distort.

On a shared machine wall-clock rates swing by 2x between runs; the work a
job takes does not. This starts kasp (the Sanic CLI, like bench/stores.py)
on a fresh PostgreSQL database with a no-op processor, drives POST /enqueue
with wrk for BENCH_SECONDS, waits until every accepted job is done, and
prints, per 1,000 jobs:

- kasp CPU-s: utime+stime of every process of kasp's session (/proc);
- PostgreSQL CPU-s: utime+stime of the server backends of kasp's database
  (pg_stat_activity), read before kasp closes its connections;
- commits, rows inserted, updated (and how many of them HOT), deleted: the
  database's pg_stat_database / pg_stat_user_tables counters (read after kasp
  closed its connections, which flushes them);
- WAL bytes: the WAL records that touch this database's relations
  (pg_walinspect, so other databases' traffic on a shared server is not
  counted), plus its commit records;
- statements: statements kasp's backends executed (pg_stat_statements; BEGIN
  and COMMIT count, as they are round trips too).

It runs on a throwaway cluster it starts itself (tests/support/pg_cluster.py:
initdb, a free port, pg_stat_statements preloaded, fsync on), so no other
database's traffic is counted; `--shared` uses KASP_TEST_PG instead (then
"statements" is "-" unless that server preloads pg_stat_statements).

Usage: python bench/pg_costs.py [--root DIR] [--processes N] [--label L] [--shared]
(--root runs another checkout's code with this venv: old/new A/B runs.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stores import LUA, get_json, launch, run_wrk, stop  # noqa: E402
from tests.support.pg_cluster import ThrowawayCluster  # noqa: E402
from tests.support.postgres import create_database, drop_database, dsn_for  # noqa: E402

SHARED_DSN = os.environ.get("KASP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15 of stat)


def session_cpu_s(sid: int) -> float:
    """CPU of every live process of a session (kasp's main process and its Sanic workers)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # session id (field 6 of stat)
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


async def backend_pids(admin: asyncpg.Connection, db: str) -> list[int]:
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'", db
    )
    return [r[0] for r in rows]


async def db_counters(admin: asyncpg.Connection, db: str) -> dict[str, int]:
    row = await admin.fetchrow(
        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database WHERE datname = $1",
        db,
    )
    return dict(row)


async def table_counters(dsn: str) -> tuple[int, int | None]:
    """(HOT updates of kasp's tables, statements executed if pg_stat_statements is loaded)."""
    conn = await asyncpg.connect(dsn)
    try:
        hot = await conn.fetchval("SELECT coalesce(sum(n_tup_hot_upd), 0) FROM pg_stat_user_tables")
        statements = None
        libraries = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
        if "pg_stat_statements" in libraries.split(","):
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            statements = await conn.fetchval(
                "SELECT sum(calls) FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            if os.environ.get("BENCH_STATEMENTS"):  # where the server's time goes, statement by statement
                for row in await conn.fetch(
                    "SELECT calls, total_exec_time, rows,"
                    " left(regexp_replace(query, '\\s+', ' ', 'g'), 70) AS q"
                    " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT 8"
                ):
                    print(f"    {row['calls']:>7} calls {row['total_exec_time']:>9.0f} ms  {row['q']}")
        return int(hot), statements
    finally:
        await conn.close()


async def wal_bytes(dsn: str, start_lsn: str, end_lsn: str) -> int:
    """WAL bytes of the records that touch this database's relations (commit records name none)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        oid = await conn.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")
        value = await conn.fetchval(
            "SELECT coalesce(sum(record_length), 0)"
            " FROM pg_get_wal_records_info($1::text::pg_lsn, $2::text::pg_lsn)"
            " WHERE block_ref LIKE '%/' || $3::text || '/%'",
            start_lsn,
            end_lsn,
            str(oid),
        )
        return int(value)
    finally:
        await conn.close()


def start_kasp(root: Path, store: str, processes: int, workers: str) -> tuple[object, str]:
    """The checkout `root`'s kasp, no-op processor, every job admitted."""
    no_op = {"WORK_MIN_MS": "0", "WORK_MAX_MS": "0", "ERROR_RATE": "0", "QUEUE_SIZE": "10000000"}
    return launch({"STORE": store, "WORKERS": workers, **no_op}, processes=processes, root=root)


async def measure(admin_dsn: str, root: Path, processes: int, workers: str, lua: Path, label: str) -> None:
    db = f"kasp_cost_{uuid.uuid4().hex[:8]}"
    await create_database(admin_dsn, db)
    dsn = dsn_for(admin_dsn, db)
    admin = await asyncpg.connect(admin_dsn)
    try:
        proc, url = start_kasp(root, dsn, processes, workers)
        try:
            sid = proc.pid  # type: ignore[attr-defined]
            pids = await backend_pids(admin, db)
            pg0 = {p: cpu_s(p) for p in pids}
            kasp0 = session_cpu_s(sid)
            c0 = await db_counters(admin, db)
            lsn0 = await admin.fetchval("SELECT pg_current_wal_insert_lsn()::text")
            began = time.monotonic()
            accepted, _ = await asyncio.to_thread(run_wrk, url, lua)
            wrk_s = time.monotonic() - began
            kasp_wrk = session_cpu_s(sid) - kasp0
            pg_wrk = sum(cpu_s(p) - pg0.get(p, 0.0) for p in await backend_pids(admin, db))
            while True:
                jobs = get_json(url + "/stats")["jobs"]
                if jobs["done"] >= accepted:  # type: ignore[index]
                    break
                await asyncio.sleep(0.02)
            total_s = time.monotonic() - began
            kasp_all = session_cpu_s(sid) - kasp0
            pg_all = sum(cpu_s(p) - pg0.get(p, 0.0) for p in await backend_pids(admin, db))
            lsn1 = await admin.fetchval("SELECT pg_current_wal_insert_lsn()::text")
        finally:
            stop(proc)  # type: ignore[arg-type]
        c1 = await db_counters(admin, db)
        hot, statements = await table_counters(dsn)
        wal = await wal_bytes(dsn, lsn0, lsn1)
    finally:
        await admin.close()
        await drop_database(admin_dsn, db)
    k = accepted / 1000
    d = {key: c1[key] - c0[key] for key in c0}
    per_job = (
        f"commits {d['xact_commit'] / accepted:.3f}, statements "
        + ("-" if statements is None else f"{statements / accepted:.2f}")
        + f", rows inserted {d['tup_inserted'] / accepted:.2f}, updated {d['tup_updated'] / accepted:.2f}"
        f" (HOT {hot / accepted:.2f}), deleted {d['tup_deleted'] / accepted:.2f}"
        f", WAL bytes {wal / accepted:.0f}"
    )
    print(
        f"{label} x{processes}: {accepted} jobs, enqueue {accepted / wrk_s:.0f} req/s,"
        f" end to end {accepted / total_s:.0f} jobs/s\n"
        f"  CPU-s per 1,000 jobs: kasp {kasp_wrk / k:.3f} while wrk ran, {kasp_all / k:.3f} in all;"
        f" PostgreSQL {pg_wrk / k:.3f} while wrk ran, {pg_all / k:.3f} in all\n"
        f"  per job: {per_job}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--label", default="")
    parser.add_argument("--workers", default=os.environ.get("BENCH_WORKERS", "8"))
    parser.add_argument("--shared", action="store_true", help="use KASP_TEST_PG, not a throwaway cluster")
    args = parser.parse_args()
    lua = Path(f"/tmp/kasp-cost-{os.getpid()}.lua")
    lua.write_text(LUA)
    cluster = None
    try:
        if args.shared:
            admin_dsn = SHARED_DSN
        else:
            cluster = ThrowawayCluster()
            cluster.start("shared_preload_libraries=pg_stat_statements", "fsync=on")
            admin_dsn = cluster.admin_dsn
        label = args.label or args.root.name
        asyncio.run(measure(admin_dsn, args.root.resolve(), args.processes, args.workers, lua, label))
    finally:
        lua.unlink()
        if cluster is not None:
            cluster.remove()


if __name__ == "__main__":
    main()
