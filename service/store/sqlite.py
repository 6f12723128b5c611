"""The embedded durable store: one SQLite file in WAL mode, owned by one process.

Group commit. Requests queue their operation and await a future. One commit
task takes every operation queued so far (up to `MAX_BATCH`), runs each
inside its own SAVEPOINT (a refused one, e.g. a full queue, rolls back alone)
and COMMITs them together: one fsync for the whole batch, however many
requests are waiting. Futures are resolved only after that COMMIT returned,
so a 202 means the job is on disk (WAL with `synchronous=FULL`). The event
row and the job row of an operation are written in the same transaction.

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
import dataclasses
import fcntl
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from domain.errors import QueueFull, UnknownJob, VersionConflict
from domain.events import Event
from domain.job import interrupt, start
from domain.projection import JobView, apply
from domain.states import EventType, JobState
from service.clock import now_ms
from service.store.base import EventListener, JobPage, StoreStats
from service.store.faults import StoreHealth, StoreUnavailable, is_unavailable
from service.store.rows import EVENT_COLUMNS, JOB_COLUMNS, event_from_row, event_row, view_from_row, view_row

log = logging.getLogger("kasp.store.sqlite")

T = TypeVar("T")

MAX_BATCH = 1024  # a guess: bounds one transaction's latency; batches rarely reach it
RESTART_REASON = "restart"

#: Schema migrations: MIGRATIONS[n] takes the file from version n to n + 1
#: (`PRAGMA user_version`). Append, never edit a shipped step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE kasp_events (
            seq INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            type TEXT NOT NULL,
            at_ms INTEGER NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            attempt INTEGER,
            data TEXT NOT NULL,
            UNIQUE (job_id, version)
        )""",
        """CREATE TABLE kasp_jobs (
            id TEXT PRIMARY KEY,
            payload TEXT NOT NULL,
            max_retries INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            budget_used INTEGER NOT NULL,
            last_error TEXT,
            created_at_ms INTEGER NOT NULL,
            updated_at_ms INTEGER NOT NULL,
            next_attempt_at_ms INTEGER,
            version INTEGER NOT NULL,
            created_seq INTEGER NOT NULL UNIQUE,
            ready_at_ms INTEGER
        )""",
        # (state, ready_at_ms, ...) rather than a partial index: without ANALYZE statistics
        # SQLite's planner otherwise prefers kasp_jobs_state and scans every queued job.
        "CREATE INDEX kasp_jobs_queue ON kasp_jobs (state, ready_at_ms, created_seq)",
        "CREATE INDEX kasp_jobs_state ON kasp_jobs (state, created_seq)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_JOB_COLS = ", ".join(JOB_COLUMNS)
_EVENT_COLS = ", ".join(EVENT_COLUMNS)
_SELECT_JOB = f"SELECT {_JOB_COLS} FROM kasp_jobs WHERE id = ?"
_INSERT_JOB = f"INSERT INTO kasp_jobs ({_JOB_COLS}) VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
_UPDATE_JOB = (
    "UPDATE kasp_jobs SET " + ", ".join(f"{c} = ?" for c in JOB_COLUMNS[1:]) + " WHERE id = ? AND version = ?"
)
_INSERT_EVENT = f"INSERT INTO kasp_events ({_EVENT_COLS}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
_NEXT_READY = (
    f"SELECT {_JOB_COLS} FROM kasp_jobs WHERE state = 'queued' AND ready_at_ms <= ? "
    "ORDER BY ready_at_ms, created_seq LIMIT 1"
)
_NOT_DUE = "SELECT count(*) FROM kasp_jobs WHERE state = 'queued' AND ready_at_ms > ?"
# A write that changes nothing but still reaches the disk (SQLite rewrites the header
# page): a batch with no events runs it while the store is down, so an idle
# worker's claim tells whether the disk takes writes again.
_PROBE_WRITE = f"PRAGMA user_version = {SCHEMA_VERSION}"


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


class _Log:
    """The writer thread's side: the write connection and the counters it caches."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.last_seq = conn.execute("SELECT coalesce(max(seq), 0) FROM kasp_events").fetchone()[0]
        self.event_count = conn.execute("SELECT count(*) FROM kasp_events").fetchone()[0]
        self.counts: Counter[JobState] = Counter(
            {JobState(s): n for s, n in conn.execute("SELECT state, count(*) FROM kasp_jobs GROUP BY state")}
        )
        self.batch_events: list[Event] = []  # recorded in the open transaction, for listeners

    def snapshot(self) -> tuple[int, int, Counter[JobState], int]:
        return self.last_seq, self.event_count, self.counts.copy(), len(self.batch_events)

    def restore(self, snap: tuple[int, int, Counter[JobState], int]) -> None:
        self.last_seq, self.event_count, self.counts, n = snap
        del self.batch_events[n:]

    def job(self, job_id: str) -> JobView | None:
        row = self.conn.execute(_SELECT_JOB, (job_id,)).fetchone()
        return view_from_row(row) if row is not None else None

    def record(self, prev: JobView | None, event: Event) -> JobView:
        """Append `event` after `prev` and update the job row: the one place both change."""
        event = dataclasses.replace(event, seq=self.last_seq + 1)
        view = apply(prev, event)
        try:
            self.conn.execute(_INSERT_EVENT, event_row(event))
        except sqlite3.IntegrityError:
            raise VersionConflict(event.job_id, event.version - 1, event.version) from None
        row = view_row(view)
        if prev is None:
            self.conn.execute(_INSERT_JOB, row)
        else:
            cur = self.conn.execute(_UPDATE_JOB, (*row[1:], view.id, prev.version))
            if cur.rowcount != 1:
                raise VersionConflict(event.job_id, prev.version, event.version)
            self.counts[prev.state] -= 1
        self.counts[view.state] += 1
        self.last_seq = event.seq
        self.event_count += 1
        self.batch_events.append(event)
        return view

    # -- operations (run in the writer thread, each inside a savepoint) ---------

    def enqueue(self, event: Event, capacity: int) -> tuple[JobView, bool]:
        existing = self.job(event.job_id)
        if existing is not None:
            return existing, False
        not_due = self.conn.execute(_NOT_DUE, (now_ms(),)).fetchone()[0]
        if self.counts[JobState.QUEUED] - not_due >= capacity:
            raise QueueFull(capacity)
        return self.record(None, event), True

    def append(self, event: Event) -> JobView:
        prev = self.job(event.job_id)
        if prev is None:
            raise UnknownJob(event.job_id)
        if event.version != prev.version + 1:
            raise VersionConflict(event.job_id, event.version - 1, prev.version)
        return self.record(prev, event)

    def claim(self, at_ms: int) -> JobView | None:
        row = self.conn.execute(_NEXT_READY, (at_ms,)).fetchone()
        if row is None:
            return None
        prev = view_from_row(row)
        return self.record(prev, start(prev, at_ms=at_ms))

    def recover(self) -> int:
        """Interrupt every attempt a previous process left running (it is gone: we hold the lock)."""
        rows = self.conn.execute(
            f"SELECT {_JOB_COLS} FROM kasp_jobs WHERE state = 'running' ORDER BY created_seq"
        ).fetchall()
        at_ms = now_ms()
        for row in rows:
            prev = view_from_row(row)
            self.record(prev, interrupt(prev, at_ms=at_ms, reason=RESTART_REASON))
        return len(rows)


_Op = tuple[Callable[[_Log], Any], "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _open_log(path: str) -> _Log:
    """Connect, upgrade the schema, and interrupt attempts a previous process left running."""
    conn = _connect(path)
    try:
        _migrate(conn)
        log_ = _Log(conn)
        conn.execute("BEGIN IMMEDIATE")
        recovered = log_.recover()
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    log_.batch_events.clear()
    if recovered:
        log.warning(
            "%d attempts were cut off by the last stop; recorded as interrupted",
            recovered,
            extra={"action": "store_recovered"},
        )
    return log_


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


class SqliteStore:
    poll_interval_s: float | None = None

    def __init__(self, path: str) -> None:
        self.path = path
        self._listeners: list[EventListener] = []
        self._lock_fd: int | None = None
        self._log: _Log | None = None
        self._reader: sqlite3.Connection | None = None
        self._pending: list[_Op] = []
        self._flusher: asyncio.Task[None] | None = None
        #: (last_seq, event_count, jobs by state) as of the last COMMIT: what readers may see
        self._committed: tuple[int, int, dict[JobState, int]] = (0, 0, {})
        self.health = StoreHealth("SQLite")

    async def open(self) -> None:
        """Open the file, or refuse: a file kasp cannot write (read-only, full disk) does not start."""
        try:
            self._lock_fd = _lock_exclusively(self.path + ".lock")
            self._log = await asyncio.to_thread(_open_log, self.path)
            self._log.conn.execute("BEGIN IMMEDIATE")
            self._log.conn.execute(_PROBE_WRITE)
            self._log.conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:  # OSError: the lock file, on a read-only mount
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
        self._publish()
        self._reader = _connect(self.path)
        self._reader.execute("PRAGMA query_only = 1")

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.wait([self._flusher], timeout=30)  # let queued writes commit
        if self._log is not None:
            self._log.conn.close()
            self._log = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._unlock()

    def _release(self) -> None:
        """Close the connection and release the lock, after a failed open."""
        if self._log is not None:
            self._log.conn.close()
            self._log = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def _publish(self) -> None:
        assert self._log is not None
        self._committed = (self._log.last_seq, self._log.event_count, dict(self._log.counts))

    def _write(self, fn: Callable[[_Log], T]) -> asyncio.Future[T]:
        assert self._log is not None, "the store is not open"
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="kasp-sqlite-commits")
        return fut

    async def _flush(self) -> None:
        """Group commit: run every queued operation, then one COMMIT (off the loop) for all."""
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            log_ = self._log
            assert log_ is not None
            conn = log_.conn
            outcomes: list[_Outcome] = []
            events: list[Event] = []
            before = log_.snapshot()
            try:
                conn.execute("BEGIN IMMEDIATE")
                for fn, fut in batch:
                    snap = log_.snapshot()
                    conn.execute("SAVEPOINT op")
                    try:
                        result = fn(log_)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                        log_.restore(snap)
                        outcomes.append((fut, None, self.health.failed(exc)))
                    else:
                        conn.execute("RELEASE op")
                        outcomes.append((fut, result, None))
                events, log_.batch_events = log_.batch_events, []
                if not events and not self.health.available:
                    conn.execute(_PROBE_WRITE)
                # The fsync happens here, in a thread: the loop keeps serving and queueing.
                await asyncio.to_thread(conn.execute, "COMMIT")
            except sqlite3.Error as exc:
                # Nothing of this batch is on disk: every caller gets the error (an outage
                # as StoreUnavailable, logged once by the health record; a bug as itself).
                error = self.health.failed(exc)
                if not isinstance(error, StoreUnavailable):
                    log.exception("SQLite write failed", extra={"action": "store_commit_error"})
                with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may have rolled back
                    if conn.in_transaction:
                        conn.rollback()
                log_.restore(before)  # the counters as of the last COMMIT, without a query
                outcomes = [(fut, None, error) for _, fut in batch]
                events = []
            else:
                self.health.succeeded()
            self._publish()
            self._deliver(outcomes, events)

    def _deliver(self, outcomes: list[_Outcome], events: list[Event]) -> None:
        """After a COMMIT: listeners first (in seq order), then the waiting callers."""
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:  # a listener's bug must not strand the callers of a commit
                    log.exception(
                        "an event listener failed on seq %d", event.seq, extra={"action": "listener_error"}
                    )
        for fut, result, exc in outcomes:
            if fut.done():
                continue  # the caller went away; the write stands
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # On the loop: reads are short indexed queries on the WAL snapshot; a thread hop
        # per read would cost more (each sqlite3 call re-takes the GIL) than the query.
        assert self._reader is not None, "the store is not open"
        try:
            return fn(self._reader)
        except sqlite3.Error as exc:
            self.health.raise_if_unavailable(exc)
            raise

    # -- writing -----------------------------------------------------------

    async def enqueue(self, event: Event, *, capacity: int) -> tuple[JobView, bool]:
        return await self._write(lambda log_: log_.enqueue(event, capacity))

    async def append(self, event: Event) -> JobView:
        return await self._write(lambda log_: log_.append(event))

    async def claim_ready(self, *, at_ms: int) -> JobView | None:
        return await self._write(lambda log_: log_.claim(at_ms))

    # -- reading -----------------------------------------------------------

    async def next_due_ms(self) -> int | None:
        def query(conn: sqlite3.Connection) -> int | None:
            sql = "SELECT min(ready_at_ms) FROM kasp_jobs WHERE state = 'queued'"
            value: int | None = conn.execute(sql).fetchone()[0]
            return value

        return await self._read(query)

    async def get_job(self, job_id: str) -> JobView | None:
        def query(conn: sqlite3.Connection) -> JobView | None:
            row = conn.execute(_SELECT_JOB, (job_id,)).fetchone()
            return view_from_row(row) if row is not None else None

        return await self._read(query)

    async def list_jobs(self, *, state: JobState | None, limit: int, cursor: int) -> JobPage:
        def query(conn: sqlite3.Connection) -> JobPage:
            if state is None:
                sql = f"SELECT {_JOB_COLS} FROM kasp_jobs WHERE created_seq > ? ORDER BY created_seq LIMIT ?"
                rows = conn.execute(sql, (cursor, limit)).fetchall()
            else:
                sql = (
                    f"SELECT {_JOB_COLS} FROM kasp_jobs WHERE state = ? AND created_seq > ? "
                    "ORDER BY created_seq LIMIT ?"
                )
                rows = conn.execute(sql, (state.value, cursor, limit)).fetchall()
            jobs = [view_from_row(r) for r in rows]
            return JobPage(jobs, jobs[-1].created_seq if len(jobs) == limit else None)

        return await self._read(query)

    async def job_events(self, job_id: str) -> list[Event] | None:
        def query(conn: sqlite3.Connection) -> list[Event] | None:
            sql = f"SELECT {_EVENT_COLS} FROM kasp_events WHERE job_id = ? ORDER BY version"
            events = [event_from_row(r) for r in conn.execute(sql, (job_id,))]
            return events or None

        return await self._read(query)

    async def read_events(
        self, *, after: int, limit: int, job_id: str | None, type: EventType | None
    ) -> list[Event]:
        where, params = ["seq > ?"], [after]
        if job_id is not None:
            where.append("job_id = ?")
            params.append(job_id)  # type: ignore[arg-type]
        if type is not None:
            where.append("type = ?")
            params.append(type.value)  # type: ignore[arg-type]
        sql = f"SELECT {_EVENT_COLS} FROM kasp_events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        params.append(limit)

        def query(conn: sqlite3.Connection) -> list[Event]:
            return [event_from_row(r) for r in conn.execute(sql, params)]

        return await self._read(query)

    async def stats(self) -> StoreStats:
        last_seq, event_count, counts = self._committed
        now = now_ms()

        def query(conn: sqlite3.Connection) -> int:
            n: int = conn.execute(_NOT_DUE, (now,)).fetchone()[0]
            return n

        delayed = await self._read(query)
        queued = counts.get(JobState.QUEUED, 0)
        return StoreStats(
            jobs={s: counts.get(s, 0) for s in JobState},
            ready=max(0, queued - delayed),
            delayed=delayed,
            event_count=event_count,
            last_seq=last_seq,
        )

    async def unfinished_job_ids(self) -> list[str]:
        def query(conn: sqlite3.Connection) -> list[str]:
            sql = "SELECT id FROM kasp_jobs WHERE state IN ('queued', 'running') ORDER BY created_seq"
            return [r[0] for r in conn.execute(sql)]

        return await self._read(query)


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
