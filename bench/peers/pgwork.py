"""What a burn-down costs the database: WAL bytes, rows written, commits, top statements.

The server is shared (other engineers' tests write to it too), so every figure
is taken for the one database a run uses:

- rows written and commits: `pg_stat_database` (per database) deltas of
  tup_inserted + tup_updated + tup_deleted, and of xact_commit, read once no
  backend of the run is connected (a backend flushes its counters as it exits);
- WAL bytes: `pg_waldump` over the run's LSN range, summing the records that
  touch a relation of this database plus the commit records of their
  transactions (full-page images included). A temporary physical replication
  slot (`hold_wal`) keeps the server from recycling those segments before they
  are read (every DROP DATABASE forces a checkpoint, and the tenants drop many);
  it belongs to the admin session, so it vanishes if the harness dies.
  `pg_current_wal_lsn()` differences
  count every tenant's WAL, so they are reported beside it as `wal_cluster`;
  when pg_waldump cannot read pg_wal (not root, another host, a segment already
  recycled), only that figure is left;
- top statements: from `pg_stat_statements` when the server preloads it (it
  needs shared_preload_libraries and a restart, which a shared server is not
  given for a benchmark); otherwise the harness says it is unavailable.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_REL = re.compile(r"(?:rel \d+/|base/|db )(\d+)\b")
_RECORD = re.compile(r"rmgr: (\S+)\s+len \(rec/tot\):\s+\d+/\s*(\d+), tx:\s+(\d+),")


@dataclass(frozen=True)
class Counters:
    lsn: str
    commits: int
    rows_written: int


async def wait_for_no_backends(admin: asyncpg.Connection, db: str, *, deadline_s: float = 30) -> None:
    """Until every backend of `db` has exited (and so flushed its statistics)."""
    deadline = time.monotonic() + deadline_s
    while await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", db):
        if time.monotonic() > deadline:
            raise RuntimeError(f"backends of {db} still connected after {deadline_s:g} s")
        await asyncio.sleep(0.05)


async def counters(admin: asyncpg.Connection, db: str) -> Counters:
    row = await admin.fetchrow(
        "SELECT pg_current_wal_lsn()::text AS lsn, xact_commit,"
        " tup_inserted + tup_updated + tup_deleted AS rows_written"
        " FROM pg_stat_database WHERE datname = $1",
        db,
    )
    assert row is not None, db
    return Counters(row["lsn"], row["xact_commit"], row["rows_written"])


async def lsn_bytes(admin: asyncpg.Connection, start: str, end: str) -> int:
    return int(await admin.fetchval("SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)", end, start))


class WalReader:
    """Per-database WAL bytes from pg_waldump, when this process can read pg_wal."""

    def __init__(self, waldump: str | None, wal_dir: Path | None) -> None:
        self.waldump = waldump
        self.wal_dir = wal_dir
        self.problem = ""
        self.failures: list[str] = []  #: why a run's figure is missing (one line each)
        if waldump is None:
            self.problem = "pg_waldump not found"
        elif wal_dir is None:
            self.problem = "cannot read the server's pg_wal (another host, or not root)"

    @classmethod
    def locate(cls, server_version_num: int, data_directory: str) -> WalReader:
        """The pg_waldump of the server's major version, and its pg_wal directory if readable."""
        major = server_version_num // 10_000
        candidates = [shutil.which("pg_waldump"), f"/usr/lib/postgresql/{major}/bin/pg_waldump"]
        waldump = next((c for c in candidates if c and Path(c).is_file()), None)
        wal_dir = Path(data_directory) / "pg_wal"
        try:
            readable = wal_dir.is_dir() and any(wal_dir.iterdir())
        except PermissionError:
            readable = False
        return cls(waldump, wal_dir if readable else None)

    def database_bytes(self, db_oid: int, start: str, end: str) -> int | None:
        """WAL bytes of `db_oid`'s records between two LSNs, or None (and `problem` says why)."""
        if self.problem or start == end:
            return 0 if start == end else None
        assert self.waldump is not None and self.wal_dir is not None
        done = subprocess.run(
            [self.waldump, "-p", str(self.wal_dir), "-s", start, "-e", end],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            self.failures.append(done.stderr.strip()[:300])
            return None
        oid = str(db_oid)
        total = 0
        ours: set[str] = set()
        by_xid: dict[str, int] = {}
        for line in done.stdout.splitlines():
            m = _RECORD.match(line)
            if m is None:
                continue
            rmgr, size, xid = m.group(1), int(m.group(2)), m.group(3)
            if any(found == oid for found in _REL.findall(line)):
                total += size
                if xid != "0":
                    ours.add(xid)
            elif rmgr == "Transaction" and xid != "0":
                by_xid[xid] = by_xid.get(xid, 0) + size
        return total + sum(size for xid, size in by_xid.items() if xid in ours)


SLOT = "kasp_bench_peers"


async def hold_wal(admin: asyncpg.Connection) -> None:
    """Retain WAL from now on, until `release_wal` (or the end of this session)."""
    await admin.execute("SELECT pg_create_physical_replication_slot($1, true, true)", SLOT)


async def release_wal(admin: asyncpg.Connection) -> None:
    await admin.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", SLOT
    )


async def statements_available(admin: asyncpg.Connection) -> bool:
    preload = await admin.fetchval("SHOW shared_preload_libraries")
    return "pg_stat_statements" in preload.split(",") or "pg_stat_statements" in preload


async def prepare_statements(dsn: str) -> None:
    """pg_stat_statements' functions and view live in the database that creates the extension."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    finally:
        await conn.close()


async def reset_statements(dsn: str, db_oid: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_statements_reset(0, $1::oid, 0)", db_oid)
    finally:
        await conn.close()


async def top_statements(dsn: str, db_oid: int, *, limit: int = 5) -> list[dict[str, object]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT calls, total_exec_time, rows, wal_bytes,"
            " left(regexp_replace(query, '\\s+', ' ', 'g'), 100) AS q"
            " FROM pg_stat_statements WHERE dbid = $1::oid ORDER BY total_exec_time DESC LIMIT $2",
            db_oid,
            limit,
        )
    finally:
        await conn.close()
    return [
        {
            "calls": r["calls"],
            "ms": round(r["total_exec_time"], 1),
            "rows": r["rows"],
            "wal_bytes": int(r["wal_bytes"]),
            "query": r["q"],
        }
        for r in rows
    ]
