"""The shared durable store: PostgreSQL through asyncpg, for one or many kasp instances.

A thin driver under the store core (service/store/core.py): the rules and the
group commit are the core's; this module locks, reads, writes, and keeps its
statements in sql/postgres.sql.

Group commit. Requests (enqueues, appends, claims, lease recoveries,
retention steps) queue up in the instance and are committed in batches: while
one transaction is being committed, the next requests wait, then all of them
go into the next transaction (at most `core.MAX_BATCH`). A batch is decided
with a fixed number of round trips, whatever its size: BEGIN; the job rows it
names and the ready jobs for all its claims, locked, in one query; the
`kasp_log` lock (with the count of delayed jobs when it admits new ones) in
another; events, job rows and `kasp_log` written by one statement; COMMIT,
one WAL flush. Callers get their answer only after COMMIT: a 202 means the job is on
disk. The event rows, the job rows (the projection) and the `kasp_log` row
change in that one transaction, or not at all.

Seq and visibility. `kasp_log` is a single row holding the last seq and the
job counts. A batch first reads and locks the job rows it needs and decides
its events; then, as its LAST step before writing, it locks `kasp_log`
(`SELECT ... FOR UPDATE`), numbers its events from the last seq, writes, and
keeps the lock until COMMIT. So the numbering-and-commit phases of all
instances are serialised: the batch that assigns seq n+1 numbers only after
the one that assigned seq n has committed and become visible (PostgreSQL
releases row locks after the commit is visible to new snapshots). Commit
order is therefore seq order, every snapshot sees a gap-free prefix of the
log, and a reader paging with `seq > after` never skips an event that a
later read would return, however many instances append. The same lock makes
QUEUE_SIZE admission exact across instances (new jobs are admitted only
while it is held, counting ready jobs afresh). Every writer takes job rows
(in id order, or with SKIP LOCKED) before `kasp_log`, never after, so writers
cannot deadlock. Serialising costs throughput per batch, not per request, and
only for the write and COMMIT: see docs/STORAGE.md.

Claims. Ready jobs are picked in claim order (priority DESC, ready_at,
created_seq, through the `kasp_jobs_claim` index) with `FOR UPDATE SKIP
LOCKED`, as many as the batch's claims ask for in one query, and given
`started` and a lease owned by this instance, measured on the database's
clock so instances need not agree on time. Lease renewals skip rows a batch
holds (they are changing anyway) and so never wait.

Text. PostgreSQL `text` cannot hold U+0000, which a JSON payload or an error
may contain: last_error (and payloads of rows from before schema 5) are stored
as JSON string literals (rows.Rows(json_text=True)), event data is JSON already,
and a read whose key holds U+0000 matches nothing without asking the server.

Payload. A job's payload is written once, in its enqueued event (schema 5):
job rows are written without it, and every read of a job row takes it from
that event (one probe of the (job_id, version) key). kasp_jobs gets a new row
version per event and none can be HOT (state is indexed), so each version
copied the payload: a 100-byte payload was ~310 of the 2,820 WAL bytes a job
cost.

Wake-ups. A trigger NOTIFYs channel `kasp_events` for every event with
"<application_name> <type> <due_ms> <job_id>"; each instance LISTENs on a dedicated
connection and tells its remote listeners about other instances' events
(its own reach `add_listener` listeners, after COMMIT, in seq order).
Notifications are best effort (a dropped LISTEN connection is re-opened), so
idle workers also poll every `POLL_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from domain.events import Event
from domain.projection import JobView
from domain.states import EventType, JobState
from service.clock import now_ms
from service.store.base import EventListener, JobPage, RemoteListener, StoreStats
from service.store.core import Batch, GroupCommit, GroupCommitWrites, Listeners
from service.store.faults import StoreHealth, StoreUnavailable, is_unavailable
from service.store.queries import Queries
from service.store.rows import EVENT_COLUMNS, JOB_COLUMNS, Rows, event_from_row, event_row

log = logging.getLogger("kasp.store.postgres")

Q = Queries("postgres")
ROWS = Rows(json_text=True)  # text cannot hold U+0000: free text is kept as JSON string literals

POLL_INTERVAL_S = 1.0  # a guess: the fallback when a notification is lost; also the SSE poll pace
POOL_MAX_SIZE = 10  # a guess: WORKERS' claims plus concurrent requests; 100 connections / 10 instances
RECOVER_BATCH = 100  # expired leases recovered per transaction (a guess: one batch's worth)
#: A guess: evicted jobs (about 4 dead rows each) between this instance's VACUUMs of the tables
#: retention deletes from, so their size stays flat without waiting for autovacuum's pace.
VACUUM_EVERY_EVICTED = 5000
CLOSE_VACUUM_WAIT_S = 10  # a guess: a VACUUM of retained-size tables takes well under this
LEASE_EXPIRED_REASON = "lease_expired"
CHANNEL = "kasp_events"

#: Schema migrations: MIGRATIONS[n] takes the database from version n to n + 1
#: (rows of kasp_schema). Append, never edit a shipped step.
MIGRATIONS: tuple[str, ...] = (Q.schema_1, Q.schema_2, Q.schema_3, Q.schema_4, Q.schema_5)
SCHEMA_VERSION = len(MIGRATIONS)

#: kasp_log's per-state columns, in write_batch's parameter order ($42..$46).
_STATE_COLUMNS = ("queued", "running", "done", "failed", "cancelled")


def _has_nul(text: str | None) -> bool:
    """A key PostgreSQL could not even be asked about; no stored key holds U+0000 (ids are checked)."""
    return text is not None and "\x00" in text


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to one list per column: the arrays `unnest` turns back into rows."""
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


class _Tx:
    """One write transaction, as the core sees it (core.Transaction)."""

    def __init__(self, conn: asyncpg.Connection, store: PostgresStore) -> None:
        self.conn = conn
        self.store = store

    async def jobs(self, ids: Sequence[str], at_ms: int, limit: int) -> tuple[list[JobView], list[JobView]]:
        if not limit:
            return ROWS.views_from_rows(await self.conn.fetch(Q.lock_jobs, list(ids))), []
        if not ids:
            return [], ROWS.views_from_rows(await self.conn.fetch(Q.claimable, at_ms, limit))
        rows = await self.conn.fetch(Q.lock_jobs_and_claimable, list(ids), at_ms, limit)
        return [ROWS.view_from_row(r[1:]) for r in rows if r[0]], [
            ROWS.view_from_row(r[1:]) for r in rows if not r[0]
        ]

    async def recoverable(self) -> Sequence[JobView]:
        return ROWS.views_from_rows(await self.conn.fetch(Q.expired, RECOVER_BATCH))

    async def evictable(self, limit: int) -> Sequence[JobView]:
        return ROWS.views_from_rows(await self.conn.fetch(Q.evictable, limit))

    async def lock_log(self, delayed_at_ms: int | None) -> tuple[int, int, int, int]:
        if delayed_at_ms is None:
            last_seq, queued, finished = await self.conn.fetchrow(Q.lock_log)
            return last_seq, queued, finished, 0
        last_seq, queued, finished, delayed = await self.conn.fetchrow(
            Q.lock_log_counting_delayed, delayed_at_ms
        )
        return last_seq, queued, finished, delayed

    async def write(self, batch: Batch) -> None:
        await self._write(batch)

    async def lock_log_and_write(self, batch: Batch) -> tuple[int, int]:
        last_seq, finished = await self._write(batch)  # the head is locked and read by the write
        batch.number(last_seq)  # the seqs write_batch gave: last seq + 1, + 2, ... in event order
        return last_seq, finished

    async def _write(self, batch: Batch) -> tuple[int, int]:
        """write_batch: the events (numbered by the statement from the head it locks), the new
        jobs' rows (a plain INSERT), the changed jobs' rows and the head, in one round trip.
        Rows go without payload: it is in the enqueued event (schema 5)."""
        owner = self.store.instance_id
        created, changed = [], []
        for v in batch.changed.values():
            if batch.created(v.id):
                created.append(ROWS.state_row(v))
            else:
                changed.append((*ROWS.state_row(v), owner if v.state is JobState.RUNNING else None))
        last_seq, finished = await self.conn.fetchrow(
            Q.write_batch,
            *_columns([event_row(e)[1:] for e in batch.events], len(EVENT_COLUMNS) - 1),
            *_columns(created, len(JOB_COLUMNS) - 1),
            *_columns(changed, len(JOB_COLUMNS)),
            self.store.lease_ms,
            len(batch.events),
            *(batch.states[s] for s in _STATE_COLUMNS),
        )
        if batch.evicted:
            await self.conn.execute(Q.evict, [v.id for v in batch.evicted])
            self.store.evicted_since_vacuum += len(batch.evicted)
        return last_seq, finished


class PostgresStore(GroupCommitWrites):
    poll_interval_s: float | None = POLL_INTERVAL_S
    #: concurrent writes share one commit, so a claim sent with an outcome costs no extra commit
    batches_commits = True

    def __init__(self, dsn: str, *, lease_timeout_s: float, retain_finished: int) -> None:
        self.dsn = dsn
        self.lease_s = lease_timeout_s
        self.lease_ms = int(lease_timeout_s * 1000)
        self.instance_id = f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._app_name = f"kasp {self.instance_id}"
        self._pool: asyncpg.Pool | None = None
        self._guarded: _GuardedPool | None = None  # self._pool behind faults.py's classification
        self._listen_conn: asyncpg.Connection | None = None
        self._listeners = Listeners()
        self._remote_listeners: list[RemoteListener] = []
        self.health = StoreHealth("PostgreSQL")
        self._commits = GroupCommit(
            self._transaction,
            self._listeners,
            self.health,
            retain_finished=retain_finished,
            name="kasp-pg-commits",
            on_outage=self._pool_expired,
            pipelined=True,  # two transactions in flight: the head lock orders their writes
        )
        self.evicted_since_vacuum = 0
        self._vacuum: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        # Every kasp query reads in the order of an index. A fresh or fast-growing table has
        # stale statistics, and the planner then sorts all queued jobs for each claim (seen
        # in make bench-stores); enable_sort=off only makes sorting the plan of last resort.
        settings = {"application_name": self._app_name, "enable_sort": "off"}
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=POOL_MAX_SIZE, server_settings=settings, reset=_keep_session
            )
            self._guarded = _GuardedPool(self._pool, self.health)
            async with self._pool.acquire() as conn:
                await _migrate(conn)
            await self._listen()
        except Exception as exc:
            await self.close()
            if not is_unavailable(exc):
                raise
            raise StoreUnavailable(
                f"PostgreSQL cannot be reached ({exc}); kasp does not start on a store it cannot reach: "
                "check STORE and that the server is up"
            ) from exc

    async def _pool_expired(self) -> None:
        """After an outage's error: replace every pooled connection on its next use (one that
        survived a server restart half-open would fail the next request too)."""
        if self._pool is not None:
            await self._pool.expire_connections()

    async def close(self) -> None:
        await self._commits.close()  # let queued writes commit
        if self._vacuum is not None:
            await asyncio.wait([self._vacuum], timeout=CLOSE_VACUUM_WAIT_S)
        if self._listen_conn is not None:
            await self._listen_conn.close()
            self._listen_conn = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _listen(self) -> None:
        conn = await asyncpg.connect(
            self.dsn, server_settings={"application_name": self._app_name + " listen"}
        )
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        self._listen_conn = conn

    async def _ensure_listening(self) -> None:
        """Re-open a LISTEN connection that dropped (until then, polling covers)."""
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            return
        if self._listen_conn is not None:  # noticed once per loss; retried every lease/3
            log.warning("LISTEN connection lost; reconnecting", extra={"action": "store_relisten"})
            self._listen_conn = None
        try:
            await self._listen()
        except Exception as exc:
            self.health.raise_if_unavailable(exc)
            raise
        log.info("LISTEN connection re-opened", extra={"action": "store_relisten"})

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        try:
            sender, type_name, due, job_id = payload.rsplit(" ", 3)
            type_ = EventType(type_name)
            due_ms = int(due) if due else None
        except ValueError:
            log.warning("ignoring a malformed notification %r", payload, extra={"action": "store_bad_notify"})
            return
        if sender == self._app_name:
            return  # our own event: local listeners already had it
        for listener in self._remote_listeners:
            try:
                listener(type_, due_ms, job_id)
            except Exception:
                log.exception("a remote event listener failed", extra={"action": "listener_error"})

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.add(listener)

    def add_remote_listener(self, listener: RemoteListener) -> None:
        self._remote_listeners.append(listener)

    @property
    def pool(self) -> _GuardedPool:
        """The connection pool, whose every query turns an outage into StoreUnavailable."""
        assert self._guarded is not None, "the store is not open"
        return self._guarded

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Tx]:
        assert self._pool is not None, "the store is not open"
        async with self._pool.acquire() as conn, conn.transaction():  # errors: GroupCommit classifies
            yield _Tx(conn, self)
        if self.evicted_since_vacuum >= VACUUM_EVERY_EVICTED and (
            self._vacuum is None or self._vacuum.done()
        ):
            self.evicted_since_vacuum = 0
            self._vacuum = asyncio.get_running_loop().create_task(
                self._vacuum_evicted(), name="kasp-pg-vacuum"
            )

    async def _vacuum_evicted(self) -> None:
        """Make the space of evicted rows reusable now (a plain VACUUM blocks no reader or writer)."""
        try:
            await self.pool.execute(Q.vacuum)
        except Exception:
            log.exception("VACUUM after eviction failed", extra={"action": "store_vacuum_error"})

    # -- writing -----------------------------------------------------------

    async def renew_leases(self, job_ids: Collection[str]) -> int:
        status = await self.pool.execute(Q.renew_leases, list(job_ids), self.instance_id, self.lease_ms)
        return int(status.rsplit(" ", 1)[1])

    async def recover_expired(self) -> int:
        await self._ensure_listening()
        if await self.pool.fetchval(Q.any_expired) is None:
            return 0  # the usual case: no batch, no kasp_log lock
        count: int = await self._commits.request("recover", reason=LEASE_EXPIRED_REASON)
        if count:
            log.warning(
                "%d attempts lost their lease (their instance stopped renewing); recorded as interrupted",
                count,
                extra={"action": "store_recovered"},
            )
        return count

    # -- reading -----------------------------------------------------------

    async def next_due_ms(self) -> int | None:
        value: int | None = await self.pool.fetchval(Q.next_due)
        return value

    async def get_job(self, job_id: str) -> JobView | None:
        if _has_nul(job_id):
            return None
        row = await self.pool.fetchrow(Q.job_by_id, job_id)
        return ROWS.view_from_row(row) if row is not None else None

    async def list_jobs(self, *, state: JobState | None, limit: int, cursor: int) -> JobPage:
        if state is None:
            rows = await self.pool.fetch(Q.list_jobs, cursor, limit)
        else:
            rows = await self.pool.fetch(Q.list_jobs_in_state, cursor, limit, state.value)
        jobs = ROWS.views_from_rows(rows)
        return JobPage(jobs, jobs[-1].created_seq if len(jobs) == limit else None)

    async def job_events(self, job_id: str) -> list[Event] | None:
        if _has_nul(job_id):
            return None
        events = [event_from_row(r) for r in await self.pool.fetch(Q.job_events, job_id)]
        return events or None

    async def read_events(
        self, *, after: int, limit: int, job_id: str | None, type: EventType | None
    ) -> list[Event]:
        if _has_nul(job_id):
            return []
        if job_id is None and type is None:
            rows = await self.pool.fetch(Q.events_after, after, limit)
        elif type is None:
            rows = await self.pool.fetch(Q.events_after_of_job, after, limit, job_id)
        elif job_id is None:
            rows = await self.pool.fetch(Q.events_after_of_type, after, limit, type.value)
        else:
            rows = await self.pool.fetch(Q.events_after_of_job_and_type, after, limit, job_id, type.value)
        return [event_from_row(r) for r in rows]

    async def stats(self) -> StoreStats:
        row = await self.pool.fetchrow(Q.stats, now_ms())
        by_state = dict(zip(_STATE_COLUMNS, row[2:7], strict=True))
        delayed = row[7]
        return StoreStats(
            jobs={s: by_state[s.value] for s in JobState},
            ready=max(0, by_state["queued"] - delayed),
            delayed=delayed,
            event_count=row[1],
            last_seq=row[0],
        )

    async def unfinished_job_ids(self) -> list[str]:
        return [r[0] for r in await self.pool.fetch(Q.unfinished_ids)]


class _GuardedPool:
    """The pool's query methods, with driver errors classified (faults.py) at this one seam."""

    __slots__ = ("_health", "_pool")

    def __init__(self, pool: asyncpg.Pool, health: StoreHealth) -> None:
        self._pool = pool
        self._health = health

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        try:
            rows: list[Any] = await self._pool.fetch(query, *args)
        except Exception as exc:
            await self._failed(exc)
            raise
        return rows

    async def fetchrow(self, query: str, *args: Any) -> Any:
        try:
            return await self._pool.fetchrow(query, *args)
        except Exception as exc:
            await self._failed(exc)
            raise

    async def fetchval(self, query: str, *args: Any) -> Any:
        try:
            return await self._pool.fetchval(query, *args)
        except Exception as exc:
            await self._failed(exc)
            raise

    async def execute(self, query: str, *args: Any) -> str:
        try:
            status: str = await self._pool.execute(query, *args)
        except Exception as exc:
            await self._failed(exc)
            raise
        return status

    async def _failed(self, exc: BaseException) -> None:
        error = self._health.failed(exc)
        if error is not exc:
            await self._pool.expire_connections()
            raise error


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset of a released connection: none. asyncpg's default sends `RESET ALL;
    CLOSE ALL; UNLISTEN *; ...`, one round trip per use (per batch, per read), to undo session
    state kasp never creates on pooled connections: it sets nothing after connecting, holds no
    cursor or session advisory lock (only transaction-scoped ones), and LISTENs on its own
    connection. (An open transaction is still rolled back by the pool before this runs.)"""


async def _migrate(conn: asyncpg.Connection) -> None:
    """Bring the database to SCHEMA_VERSION; idempotent, safe when instances start together."""
    async with conn.transaction():
        await conn.execute(Q.schema_lock)
        await conn.execute(Q.schema_table)
        version = await conn.fetchval(Q.schema_version)
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database has kasp schema version {version}, newer than this kasp's {SCHEMA_VERSION}"
            )
        for step in range(version, SCHEMA_VERSION):
            await conn.execute(MIGRATIONS[step])
            await conn.execute(Q.schema_record, step + 1)
            log.info("PostgreSQL schema upgraded to version %d", step + 1, extra={"action": "schema_upgrade"})


__all__ = ["PostgresStore"]
