"""The embedded durable store: one SQLite file in WAL mode, owned by one process.

A thin driver under the store core (service/store/core.py): the rules and the
group commit are the core's; this module locks, reads, writes, and keeps its
statements in sql/sqlite.sql.

Group commit. Requests queue and await a future; one transaction takes every
request queued so far (up to `MAX_BATCH`), the core decides them from the rows
read, the writes go in with a few statements (multi-row INSERTs of the events
and new jobs, an UPDATE by rowid per changed job), and one COMMIT makes them
durable together: one fsync for the whole batch. Futures are resolved only
after that COMMIT returned, so a 202 means the job is on disk (WAL with
`synchronous=FULL`). The event row and the job row of a change are written in
the same transaction.

Threads. The statements run on the event loop (each takes microseconds: the
pages are in the cache); only the COMMIT, which waits for the disk, runs in a
worker thread, while the loop goes on serving requests and queueing the next
batch. Running every statement in a writer thread instead was measured to be
slower under load: every sqlite3 call gives up and re-takes the GIL, and a
thread re-taking it from a busy event loop waits up to the interpreter's
switch interval (5 ms) each time.

Order. There is one writer, so seq order is commit order and readers (a
second connection; WAL lets it read while a COMMIT is in progress) always
see a gap-free prefix of the log.

One process per file, enforced with an exclusive lock on `<path>.lock`: the
cached counters (last seq, jobs by state) would drift with a second writer,
and recovery at open treats every `running` job as cut off by a crash (it
records `interrupted`, reason "restart", and the job runs again).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from itertools import chain
from operator import itemgetter
from typing import Any

from domain.events import Event
from domain.projection import JobView
from domain.states import FINISHED_STATES, EventType, JobState
from service.clock import now_ms
from service.store.base import EventListener, JobPage, StoreStats
from service.store.core import Batch, GroupCommit, GroupCommitWrites, Listeners
from service.store.faults import StoreHealth, StoreUnavailable, is_unavailable
from service.store.queries import Queries
from service.store.rows import Rows, event_from_row, event_row

log = logging.getLogger("kasp.store.sqlite")

Q = Queries("sqlite")
ROWS = Rows(json_text=False)  # SQLite text holds U+0000 as it is

#: update_job's parameters picked from a full row (rows.JOB_COLUMNS order): the columns an
#: event after `enqueued` changes, then created_seq, the rowid the UPDATE finds the row by
_CHANGED = itemgetter(3, 4, 5, 6, 8, 9, 10, 12, 15, 11)

#: Rows per multi-row INSERT (`_insert`): measured on 800-job batches (bench/sqlite_costs.py),
#: executemany cost 6.8 µs a job for the event and job rows, chunks of 16 rows 5.5, of 64 4.7,
#: of 128 4.6 (each row of an executemany is a statement run of its own: reset, step).
_CHUNKS = (64, 16)

MAX_BATCH = 1024  # a guess: bounds one transaction's latency; batches rarely reach it
RESTART_REASON = "restart"

#: Schema migrations: MIGRATIONS[n] takes the file from version n to n + 1
#: (`PRAGMA user_version`). Append, never edit a shipped step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (Q.schema_1_events, Q.schema_1_jobs, Q.schema_1_queue_index, Q.schema_1_state_index),
    (
        Q.schema_2_priority,
        Q.schema_2_timeout,
        Q.schema_2_result,
        Q.schema_2_claim_index,
        Q.schema_2_finished_index,
    ),
    # Fewer index writes per job (docs/STORAGE.md, "The schema"): created_seq becomes the
    # rowid, the claim and queue indexes hold queued jobs only, and nothing indexes created_seq.
    (
        Q.schema_3_jobs,
        Q.schema_3_copy,
        Q.schema_3_drop,
        Q.schema_3_rename,
        Q.schema_3_claim_index,
        Q.schema_3_queue_index,
        Q.schema_3_state_index,
        Q.schema_3_finished_index,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
if Q.probe_write != f"PRAGMA user_version = {SCHEMA_VERSION}":  # it must rewrite the version, not change it
    raise RuntimeError(f"sql/sqlite.sql's probe_write must set user_version = {SCHEMA_VERSION}")


class StoreBusy(RuntimeError):
    """Another process already serves this SQLite file."""


def path_from_url(url: str) -> str:
    """`sqlite:///kasp.db` is relative to the working directory, `sqlite:////var/kasp.db` absolute."""
    return url[len("sqlite:///") :]


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA synchronous = FULL")  # WAL + FULL: a commit survives power loss
    return conn


@dataclass(slots=True)
class _Head:
    """What the writer caches about the file: last seq, retained events, jobs by state."""

    last_seq: int = 0
    event_count: int = 0
    counts: Counter[str] = field(default_factory=Counter)

    def copy(self) -> _Head:
        return replace(self, counts=self.counts.copy())


def _many(one_row: str, rows: int) -> str:
    """`one_row`, an `INSERT ... VALUES (?, ...)` of sql/sqlite.sql, with its VALUES row repeated."""
    head, values = one_row.rsplit("VALUES", 1)
    return f"{head}VALUES {', '.join([values.strip()] * rows)}"


_MULTI = {sql: [(n, _many(sql, n)) for n in _CHUNKS] for sql in (Q.insert_event, Q.insert_job)}


def _insert(conn: sqlite3.Connection, one_row: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """What `conn.executemany(one_row, rows)` does, in as few statements as `_CHUNKS` allow."""
    done = 0
    for size, sql in _MULTI[one_row]:
        while len(rows) - done >= size:
            conn.execute(sql, list(chain.from_iterable(rows[done : done + size])))
            done += size
    if done < len(rows):
        conn.executemany(one_row, rows[done:])


class _Tx:
    """One write transaction, as the core sees it (core.Transaction); BEGIN IMMEDIATE holds the file."""

    def __init__(self, conn: sqlite3.Connection, head: _Head) -> None:
        self.conn = conn
        self.head = head

    async def jobs(self, ids: Sequence[str], at_ms: int, limit: int) -> tuple[list[JobView], list[JobView]]:
        execute = self.conn.execute
        if not ids:
            named = []
        elif len(ids) == 1:
            named = ROWS.views_from_rows(execute(Q.job_by_id, (ids[0],)).fetchall())
        else:
            named = ROWS.views_from_rows(execute(Q.jobs_by_ids, (json.dumps(ids),)).fetchall())
        return named, ROWS.views_from_rows(execute(Q.claimable, (at_ms, limit)).fetchall()) if limit else []

    async def recoverable(self) -> Sequence[JobView]:
        return ROWS.views_from_rows(self.conn.execute(Q.running).fetchall())

    async def evictable(self, limit: int) -> Sequence[JobView]:
        return ROWS.views_from_rows(self.conn.execute(Q.evictable, (limit,)).fetchall())

    async def lock_log(self, delayed_at_ms: int | None) -> tuple[int, int, int, int]:
        # BEGIN IMMEDIATE already holds the file: the head is the writer's cached counters.
        counts = self.head.counts
        delayed = (
            0 if delayed_at_ms is None else self.conn.execute(Q.count_delayed, (delayed_at_ms,)).fetchone()[0]
        )
        return self.head.last_seq, counts[JobState.QUEUED], sum(counts[s] for s in FINISHED_STATES), delayed

    async def write(self, batch: Batch) -> None:
        conn, head = self.conn, self.head
        if batch.events:
            _insert(conn, Q.insert_event, [event_row(e) for e in batch.events])
            rows = [ROWS.view_row(v) for v in batch.changed.values()]
            # A new job is a plain INSERT; a changed one an UPDATE of only what can change, found
            # by rowid, so the indexes of unchanged columns are not rewritten (docs/PERFORMANCE.md).
            created = batch.created
            new = [r for r in rows if created(r[0])]
            if new:
                _insert(conn, Q.insert_job, new)
            if len(new) < len(rows):
                conn.executemany(Q.update_job, [_CHANGED(r) for r in rows if not created(r[0])])
            head.last_seq = batch.last_seq
            head.event_count += len(batch.events)
        if batch.evicted:
            ids = json.dumps([v.id for v in batch.evicted])
            head.event_count -= conn.execute(Q.delete_events_of, (ids,)).rowcount
            conn.execute(Q.delete_jobs, (ids,))
        head.counts.update(batch.states)

    async def lock_log_and_write(self, batch: Batch) -> tuple[int, int]:
        last_seq, _, finished, _ = await self.lock_log(None)  # the writer's own counters: no I/O
        batch.number(last_seq)
        await self.write(batch)
        return last_seq, finished


class SqliteStore(GroupCommitWrites):
    poll_interval_s: float | None = None
    #: concurrent writes share one commit, so a claim sent with an outcome costs no extra commit
    batches_commits = True

    def __init__(self, path: str, *, retain_finished: int) -> None:
        self.path = path
        self._listeners = Listeners()
        self._lock_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._head = _Head()
        self.health = StoreHealth("SQLite")
        self._commits = GroupCommit(
            self._transaction,
            self._listeners,
            self.health,
            retain_finished=retain_finished,
            name="kasp-sqlite-commits",
            max_batch=MAX_BATCH,
        )
        #: (last_seq, event_count, jobs by state) as of the last COMMIT: what readers may see
        self._committed: tuple[int, int, dict[str, int]] = (0, 0, {})

    async def open(self) -> None:
        """Open the file, or refuse: a file kasp cannot write (read-only, full disk) does not start."""
        try:
            self._lock_fd = _lock_exclusively(self.path + ".lock")
            self._conn = await asyncio.to_thread(_open_writer, self.path)
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(Q.probe_write)
            self._conn.execute("COMMIT")
            last_seq, event_count = self._conn.execute(Q.log_head).fetchone()
            counts = Counter({s: n for s, n in self._conn.execute(Q.count_by_state)})
            self._head = _Head(last_seq, event_count, counts)
            self._publish()
            self._reader = _connect(self.path)
            self._reader.execute("PRAGMA query_only = 1")
            # We hold the lock, so the process that left jobs running is gone.
            recovered: int = await self._commits.request("recover", reason=RESTART_REASON)
        except (sqlite3.Error, OSError, StoreUnavailable) as exc:  # OSError: the lock file, read-only
            self._release()
            if not is_unavailable(exc):
                raise
            raise StoreUnavailable(
                f"the SQLite file {self.path} cannot be written ({exc}); kasp does not start on a "
                "store it cannot write: check the file system is mounted read-write and has space"
            ) from exc
        except BaseException:
            self._release()
            raise
        if recovered:
            log.warning(
                "%d attempts were cut off by the last stop; recorded as interrupted",
                recovered,
                extra={"action": "store_recovered"},
            )

    async def close(self) -> None:
        await self._commits.close()  # let queued writes commit
        self._release()

    def _release(self) -> None:
        """Close both connections and release the file's lock."""
        self._close_connections()
        self._unlock()

    def _close_connections(self) -> None:
        for conn in (self._conn, self._reader):
            if conn is not None:
                conn.close()
        self._conn = self._reader = None

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.add(listener)

    def _publish(self) -> None:
        head = self._head
        self._committed = (head.last_seq, head.event_count, dict(head.counts))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Tx]:
        conn = self._conn
        assert conn is not None, "the store is not open"
        before = self._head.copy()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _Tx(conn, self._head)
            if not self.health.available:
                conn.execute(Q.probe_write)  # even a batch with nothing to write tells if the disk is back
            # The fsync happens here, in a thread: the loop keeps serving and queueing.
            await asyncio.to_thread(conn.execute, "COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may have rolled back already
                if conn.in_transaction:
                    conn.rollback()
            self._head = before  # nothing of this batch is on disk
            raise
        finally:
            self._publish()

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        """Every read goes through here: an outage's error becomes StoreUnavailable (faults.py).

        On the loop: reads are short indexed queries on the WAL snapshot; a thread hop
        per read would cost more (each sqlite3 call re-takes the GIL) than the query."""
        assert self._reader is not None, "the store is not open"
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            self.health.raise_if_unavailable(exc)
            raise

    # -- writing -----------------------------------------------------------

    # -- reading -----------------------------------------------------------

    async def next_due_ms(self) -> int | None:
        value: int | None = self._query(Q.next_due)[0][0]
        return value

    async def get_job(self, job_id: str) -> JobView | None:
        rows = self._query(Q.job_by_id, (job_id,))
        return ROWS.view_from_row(rows[0]) if rows else None

    async def list_jobs(self, *, state: JobState | None, limit: int, cursor: int) -> JobPage:
        if state is None:
            rows = self._query(Q.list_jobs, (cursor, limit))
        else:
            rows = self._query(Q.list_jobs_in_state, (state.value, cursor, limit))
        jobs = ROWS.views_from_rows(rows)
        return JobPage(jobs, jobs[-1].created_seq if len(jobs) == limit else None)

    async def job_events(self, job_id: str) -> list[Event] | None:
        events = [event_from_row(r) for r in self._query(Q.job_events, (job_id,))]
        return events or None

    async def read_events(
        self, *, after: int, limit: int, job_id: str | None, type: EventType | None
    ) -> list[Event]:
        if job_id is None and type is None:
            rows = self._query(Q.events_after, (after, limit))
        elif type is None:
            rows = self._query(Q.events_after_of_job, (after, job_id, limit))
        elif job_id is None:
            rows = self._query(Q.events_after_of_type, (after, type.value, limit))
        else:
            rows = self._query(Q.events_after_of_job_and_type, (after, job_id, type.value, limit))
        return [event_from_row(r) for r in rows]

    async def stats(self) -> StoreStats:
        last_seq, event_count, counts = self._committed
        delayed: int = self._query(Q.count_delayed, (now_ms(),))[0][0]
        queued = counts.get(JobState.QUEUED, 0)
        return StoreStats(
            jobs={s: counts.get(s, 0) for s in JobState},
            ready=max(0, queued - delayed),
            delayed=delayed,
            event_count=event_count,
            last_seq=last_seq,
        )

    async def unfinished_job_ids(self) -> list[str]:
        return [r[0] for r in self._query(Q.unfinished_ids)]


def _open_writer(path: str) -> sqlite3.Connection:
    conn = _connect(path)
    try:
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the file to SCHEMA_VERSION; idempotent, each step in its own transaction."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise RuntimeError(f"SQLite refused WAL mode (journal_mode={mode})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the SQLite file has schema version {version}, newer than this kasp's {SCHEMA_VERSION}"
            )
        for step in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")
            log.info("SQLite schema upgraded to version %d", step + 1, extra={"action": "schema_upgrade"})
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


def _lock_exclusively(lock_path: str) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreBusy(
            f"another kasp process is using {lock_path[: -len('.lock')]} (it holds {lock_path}); "
            "the SQLite store serves one process: stop the other one, or use PostgreSQL for several"
        ) from None
    return fd
