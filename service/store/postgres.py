"""The shared durable store: PostgreSQL through asyncpg, for one or many kasp instances.

Group commit. Requests (enqueue, append, claim, lease recovery) queue up in
the instance and are committed in batches: while one transaction is being
committed, the next requests wait, then all of them go into the next
transaction (at most `MAX_BATCH`). A batch is decided with a fixed number of
round trips, whatever its size (the job rows it needs are read in one query;
events, job rows and `kasp_log` are written by one statement), and costs one
WAL flush. Callers get their answer only after COMMIT: a 202 means the
job is on disk. The event rows, the job rows (the projection) and the
`kasp_log` row change in that one transaction, or not at all.

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

Claims. Ready jobs are picked oldest first with `FOR UPDATE SKIP LOCKED` and
given `started` and a lease owned by this instance, measured on the
database's clock so instances need not agree on time. Lease renewals skip
rows a batch holds (they are changing anyway) and so never wait.

Wake-ups. A trigger NOTIFYs channel `kasp_events` for every event with
"<application_name> <type> <due_ms>"; each instance LISTENs on a dedicated
connection and tells its remote listeners about other instances' events
(its own reach `add_listener` listeners, after COMMIT, in seq order).
Notifications are best effort (a dropped LISTEN connection is re-opened), so
idle workers also poll every `POLL_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Collection, Sequence
from typing import Any, Literal

import asyncpg

from domain.errors import KaspError, QueueFull, UnknownJob, VersionConflict
from domain.events import Event
from domain.job import interrupt, start
from domain.projection import JobView, ProjectionError, apply
from domain.states import EventType, JobState
from service.clock import now_ms
from service.store.base import EventListener, JobPage, RemoteListener, StoreStats
from service.store.faults import StoreHealth, StoreUnavailable, is_unavailable
from service.store.rows import (
    EVENT_COLUMNS,
    JOB_COLUMNS,
    event_from_row,
    event_row,
    ready_at_ms,
    view_from_row,
    view_row,
)

log = logging.getLogger("kasp.store.postgres")

POLL_INTERVAL_S = 1.0  # a guess: the fallback when a notification is lost; also the SSE poll pace
POOL_MAX_SIZE = 10  # a guess: WORKERS' claims plus concurrent requests; 100 connections / 10 instances
RECOVER_BATCH = 100  # expired leases recovered per transaction
MAX_BATCH = 1000  # requests per commit; a guess that bounds one transaction to ~10 ms of work
LEASE_EXPIRED_REASON = "lease_expired"
CHANNEL = "kasp_events"
SCHEMA_LOCK_KEY = 0x6B617370  # "kasp": the advisory lock that serialises schema upgrades

_DB_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

#: Schema migrations: MIGRATIONS[n] takes the database from version n to n + 1
#: (rows of kasp_schema). Append, never edit a shipped step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE kasp_log (
            id boolean PRIMARY KEY DEFAULT true CHECK (id),
            last_seq bigint NOT NULL,
            event_count bigint NOT NULL,
            queued bigint NOT NULL,
            running bigint NOT NULL,
            done bigint NOT NULL,
            failed bigint NOT NULL
        )""",
        "INSERT INTO kasp_log VALUES (true, 0, 0, 0, 0, 0, 0)",
        """CREATE TABLE kasp_events (
            seq bigint PRIMARY KEY,
            job_id text NOT NULL,
            version integer NOT NULL,
            type text NOT NULL,
            at_ms bigint NOT NULL,
            from_state text,
            to_state text NOT NULL,
            attempt integer,
            data text NOT NULL,
            UNIQUE (job_id, version)
        )""",
        """CREATE TABLE kasp_jobs (
            id text PRIMARY KEY,
            payload text NOT NULL,
            max_retries integer NOT NULL,
            state text NOT NULL,
            attempts integer NOT NULL,
            budget_used integer NOT NULL,
            last_error text,
            created_at_ms bigint NOT NULL,
            updated_at_ms bigint NOT NULL,
            next_attempt_at_ms bigint,
            version integer NOT NULL,
            created_seq bigint NOT NULL UNIQUE,
            ready_at_ms bigint,
            lease_owner text,
            lease_expires_ms bigint
        )""",
        "CREATE INDEX kasp_jobs_queue ON kasp_jobs (ready_at_ms, created_seq) WHERE state = 'queued'",
        "CREATE INDEX kasp_jobs_state ON kasp_jobs (state, created_seq)",
        "CREATE INDEX kasp_jobs_leases ON kasp_jobs (lease_expires_ms) WHERE state = 'running'",
        f"""CREATE FUNCTION kasp_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', current_setting('application_name') || ' ' || NEW.type || ' ' ||
                CASE WHEN NEW.type = 'retry_scheduled'
                     THEN (NEW.at_ms + (NEW.data::jsonb ->> 'delay_ms')::bigint)::text ELSE '' END);
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER kasp_events_notify AFTER INSERT ON kasp_events
            FOR EACH ROW EXECUTE FUNCTION kasp_notify()""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_JOB_COLS = ", ".join(JOB_COLUMNS)
_EVENT_COLS = ", ".join(EVENT_COLUMNS)
_JOB_TYPES = (
    "text", "text", "integer", "text", "integer", "integer", "text",
    "bigint", "bigint", "bigint", "integer", "bigint", "bigint",
)  # fmt: skip
_EVENT_TYPES = ("bigint", "text", "integer", "text", "bigint", "text", "text", "integer", "text")
_N_EVENT = len(EVENT_COLUMNS)

_SELECT_JOB = f"SELECT {_JOB_COLS} FROM kasp_jobs WHERE id = $1"
_LOCK_LOG = "SELECT last_seq, queued FROM kasp_log FOR UPDATE"
_LOCK_JOBS = f"SELECT {_JOB_COLS} FROM kasp_jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
_CLAIM = f"""SELECT {_JOB_COLS} FROM kasp_jobs
    WHERE state = 'queued' AND ready_at_ms <= $1
    ORDER BY ready_at_ms, created_seq LIMIT $2 FOR UPDATE SKIP LOCKED"""
_EXPIRED = f"""SELECT {_JOB_COLS} FROM kasp_jobs
    WHERE state = 'running' AND lease_expires_ms < {_DB_NOW_MS}
    ORDER BY lease_expires_ms LIMIT {RECOVER_BATCH} FOR UPDATE SKIP LOCKED"""
_ANY_READY = "SELECT 1 FROM kasp_jobs WHERE state = 'queued' AND ready_at_ms <= $1 LIMIT 1"
_ANY_EXPIRED = f"SELECT 1 FROM kasp_jobs WHERE state = 'running' AND lease_expires_ms < {_DB_NOW_MS} LIMIT 1"
_NOT_DUE = "SELECT count(*) FROM kasp_jobs WHERE state = 'queued' AND ready_at_ms > $1"
# A batch's whole write in one statement (one round trip while kasp_log is locked):
# $1..$9 the events' columns as arrays; $10..$23 one row per changed job, its
# columns then its lease owner (NULL unless running); $24 the lease in ms (from
# the database's clock); $25 the new last seq, $26 the event count, $27..$30
# the change of jobs by state.
_N_JOB = len(JOB_COLUMNS) + 1
_P_JOB = _N_EVENT + 1
_P_LEASE = _P_JOB + _N_JOB
_WRITE_BATCH = f"""WITH e AS (
        INSERT INTO kasp_events ({_EVENT_COLS})
        SELECT * FROM unnest({", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_EVENT_TYPES))})
    ), j AS (
        INSERT INTO kasp_jobs ({_JOB_COLS}, lease_owner, lease_expires_ms)
        SELECT u.*, CASE WHEN u.lease_owner IS NULL THEN NULL ELSE {_DB_NOW_MS} + ${_P_LEASE}::bigint END
        FROM unnest({", ".join(f"${_P_JOB + i}::{t}[]" for i, t in enumerate((*_JOB_TYPES, "text")))})
            AS u({_JOB_COLS}, lease_owner)
        ON CONFLICT (id) DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in JOB_COLUMNS[1:])},
            lease_owner = EXCLUDED.lease_owner, lease_expires_ms = EXCLUDED.lease_expires_ms
    )
    UPDATE kasp_log SET last_seq = ${_P_LEASE + 1}, event_count = event_count + ${_P_LEASE + 2},
        queued = queued + ${_P_LEASE + 3}, running = running + ${_P_LEASE + 4},
        done = done + ${_P_LEASE + 5}, failed = failed + ${_P_LEASE + 6}"""
# SKIP LOCKED: a row a commit batch holds is about to change anyway; never wait (or deadlock) for it.
_RENEW = f"""UPDATE kasp_jobs SET lease_expires_ms = {_DB_NOW_MS} + $3
    WHERE id IN (SELECT id FROM kasp_jobs WHERE id = ANY($1::text[]) AND lease_owner = $2
                 AND state = 'running' FOR UPDATE SKIP LOCKED)"""

_STATE_INDEX = {JobState.QUEUED: 0, JobState.RUNNING: 1, JobState.DONE: 2, JobState.FAILED: 3}


def _is_ready(view: JobView, at_ms: int) -> bool:
    due = ready_at_ms(view)
    return due is not None and due <= at_ms


@dataclasses.dataclass(slots=True)
class _Op:
    """One caller's request, waiting for the next commit batch."""

    kind: Literal["enqueue", "append", "claim", "recover"]
    fut: asyncio.Future[Any]
    event: Event | None = None
    capacity: int = 0
    at_ms: int = 0


class _Batch:
    """One transaction's decisions: the jobs it read or changed, and the events it will write.

    Events are decided before the kasp_log lock is taken and numbered (`number`)
    once it is held, so two instances overlap everything but their writes.
    """

    def __init__(self, at_ms: int) -> None:
        self.at_ms = at_ms
        self.views: dict[str, JobView] = {}  # every job row read, as changed so far
        self.changed: dict[str, JobView] = {}
        self.events: list[Event] = []  # seq 0 until numbered
        self.created: dict[str, int] = {}  # created_seq of the jobs this batch creates
        self.deltas = [0, 0, 0, 0]  # jobs by state, in _STATE_INDEX order
        self.ready = 0  # change of ready jobs (queued and due) by this batch, then the total

    def record(self, prev: JobView | None, event: Event) -> JobView:
        view = apply(prev, event)  # raises before anything changes
        self.events.append(event)
        self.views[view.id] = self.changed[view.id] = view
        if prev is not None:
            self.deltas[_STATE_INDEX[prev.state]] -= 1
            self.ready -= _is_ready(prev, self.at_ms)
        self.deltas[_STATE_INDEX[view.state]] += 1
        self.ready += _is_ready(view, self.at_ms)
        return view

    def number(self, last_seq: int) -> None:
        """Give the events their seqs (kasp_log is locked now) and new jobs their created_seq."""
        self.events = [dataclasses.replace(e, seq=last_seq + i) for i, e in enumerate(self.events, 1)]
        for event in self.events:
            if event.type is EventType.ENQUEUED:
                self.created[event.job_id] = event.seq
        self.changed = {job_id: self.final(v) for job_id, v in self.changed.items()}

    def final(self, view: JobView) -> JobView:
        """`view` with its created_seq, if this batch created the job."""
        seq = self.created.get(view.id)
        return view if seq is None else dataclasses.replace(view, created_seq=seq)


class PostgresStore:
    poll_interval_s: float | None = POLL_INTERVAL_S

    def __init__(self, dsn: str, *, lease_timeout_s: float) -> None:
        self.dsn = dsn
        self.lease_s = lease_timeout_s
        self.instance_id = f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._app_name = f"kasp {self.instance_id}"
        self._pool: asyncpg.Pool | None = None
        self._guarded: _GuardedPool | None = None  # self._pool behind faults.py's classification
        self._listen_conn: asyncpg.Connection | None = None
        self._listeners: list[EventListener] = []
        self._remote_listeners: list[RemoteListener] = []
        self._lease_ms = int(lease_timeout_s * 1000)
        self._pending: list[_Op] = []
        self._flusher: asyncio.Task[None] | None = None
        self.health = StoreHealth("PostgreSQL")

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        # Every kasp query reads in the order of an index. A fresh or fast-growing table has
        # stale statistics, and the planner then sorts all queued jobs for each claim (seen
        # in make bench-stores); enable_sort=off only makes sorting the plan of last resort.
        settings = {"application_name": self._app_name, "enable_sort": "off"}
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=POOL_MAX_SIZE, server_settings=settings
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

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.wait([self._flusher], timeout=30)  # let queued writes commit
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
            sender, type_name, due = payload.rsplit(" ", 2)
            type_ = EventType(type_name)
            due_ms = int(due) if due else None
        except ValueError:
            log.warning("ignoring a malformed notification %r", payload, extra={"action": "store_bad_notify"})
            return
        if sender == self._app_name:
            return  # our own event: local listeners already had it
        for listener in self._remote_listeners:
            listener(type_, due_ms)

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def add_remote_listener(self, listener: RemoteListener) -> None:
        self._remote_listeners.append(listener)

    def _notify_local(self, events: Sequence[Event]) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:  # a listener's bug must not fail a batch that committed
                    log.exception(
                        "an event listener failed on seq %d", event.seq, extra={"action": "listener_error"}
                    )

    @property
    def pool(self) -> _GuardedPool:
        """The connection pool, whose every query turns an outage into StoreUnavailable."""
        assert self._guarded is not None, "the store is not open"
        return self._guarded

    # -- writing -----------------------------------------------------------

    def _submit(self, op: _Op) -> asyncio.Future[Any]:
        self._pending.append(op)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="kasp-pg-commits")
        return op.fut

    def _op(
        self, kind: Literal["enqueue", "append", "claim", "recover"], **fields: Any
    ) -> asyncio.Future[Any]:
        return self._submit(_Op(kind, asyncio.get_running_loop().create_future(), **fields))

    async def _flush(self) -> None:
        """Commit what is pending, one batch (one transaction) at a time, until nothing is."""
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                await self._commit(batch)
            except Exception as exc:
                error = self.health.failed(exc)
                if isinstance(error, StoreUnavailable):  # the server is gone: nothing committed
                    await self._pool_expired()
                    _fail(batch, error)
                elif not isinstance(exc, asyncpg.PostgresError) or len(batch) == 1:
                    _fail(batch, exc)
                else:
                    for op in batch:  # one bad request must not fail its neighbours: try each alone
                        try:
                            await self._commit([op])
                        except Exception as alone:
                            _fail([op], self.health.failed(alone))
            else:
                self.health.succeeded()

    async def _pool_expired(self) -> None:
        """After an outage's error: replace every pooled connection on its next use (one that
        survived a server restart half-open would fail the next request too)."""
        if self._pool is not None:
            await self._pool.expire_connections()

    async def _commit(self, batch: list[_Op]) -> None:
        """Decide every request of `batch` and write the result in ONE transaction (group commit)."""
        at_ms = now_ms()
        outcomes: list[tuple[_Op, Any, BaseException | None]] = []
        if all(op.kind == "claim" for op in batch):
            # Idle workers of every instance ask often; when nothing is ready, answer without
            # the kasp_log lock (and its commit). A job made ready just after wakes them again.
            claim_at = max(op.at_ms for op in batch)
            if await self.pool.fetchval(_ANY_READY, claim_at) is None:
                for op in batch:
                    if not op.fut.done():
                        op.fut.set_result(None)
                return
        async with self.pool.acquire() as conn, conn.transaction():
            b = _Batch(at_ms)
            ids = sorted({op.event.job_id for op in batch if op.event is not None})
            for row in await conn.fetch(_LOCK_JOBS, ids) if ids else ():
                b.views[row[0]] = view_from_row(row)
            n_claims = sum(op.kind == "claim" for op in batch)
            claim_at = max((op.at_ms for op in batch if op.kind == "claim"), default=at_ms)
            claimable = (
                [view_from_row(r) for r in await conn.fetch(_CLAIM, claim_at, n_claims)] if n_claims else []
            )
            expired = (
                [view_from_row(r) for r in await conn.fetch(_EXPIRED)]
                if any(op.kind == "recover" for op in batch)
                else []
            )
            enqueues = [op for op in batch if op.kind == "enqueue"]
            for op in batch:
                if op.kind != "enqueue":
                    outcomes.append(self._try_decide(b, op, claimable, expired))
            admits = any(op.event is not None and op.event.job_id not in b.views for op in enqueues)
            if b.events or admits:
                # kasp_log last, always: from here to COMMIT this batch alone numbers events
                # and counts the queue (see the module doc), and lock order stays job rows first.
                last_seq, queued = await conn.fetchrow(_LOCK_LOG)
                if admits:
                    b.ready += queued - await conn.fetchval(_NOT_DUE, at_ms)
            for op in enqueues:
                outcomes.append(self._try_decide(b, op, claimable, expired))
            if b.events:
                b.number(last_seq)
                jobs = [(*view_row(v), self._owner(v)) for v in b.changed.values()]
                await conn.execute(
                    _WRITE_BATCH,
                    *_columns([event_row(e) for e in b.events], _N_EVENT),
                    *_columns(jobs, _N_JOB),
                    self._lease_ms,
                    b.events[-1].seq,
                    len(b.events),
                    *b.deltas,
                )
        # Committed: listeners first (in seq order), then the callers.
        self._notify_local(b.events)
        for op, result, error in outcomes:
            if op.fut.done():
                continue  # the caller went away; the write stands
            if error is not None:
                op.fut.set_exception(error)
            elif isinstance(result, JobView):
                op.fut.set_result(b.final(result))
            elif isinstance(result, tuple):
                op.fut.set_result((b.final(result[0]), result[1]))
            else:
                op.fut.set_result(result)

    def _try_decide(
        self, b: _Batch, op: _Op, claimable: list[JobView], expired: list[JobView]
    ) -> tuple[_Op, Any, BaseException | None]:
        try:
            return op, self._decide(b, op, claimable, expired), None
        except (KaspError, ProjectionError) as exc:
            return op, None, exc

    def _owner(self, view: JobView) -> str | None:
        return self.instance_id if view.state is JobState.RUNNING else None

    def _decide(self, b: _Batch, op: _Op, claimable: list[JobView], expired: list[JobView]) -> Any:
        if op.kind == "claim":
            while claimable:
                candidate = claimable.pop(0)
                current = b.views.get(candidate.id, candidate)
                if _is_ready(current, op.at_ms):
                    return b.record(current, start(current, at_ms=op.at_ms))
            return None
        if op.kind == "recover":
            count = 0
            for candidate in expired:
                current = b.views.get(candidate.id, candidate)
                if current.state is JobState.RUNNING and current.version == candidate.version:
                    b.record(current, interrupt(current, at_ms=b.at_ms, reason=LEASE_EXPIRED_REASON))
                    count += 1
            expired.clear()
            return count
        event = op.event
        assert event is not None
        known = b.views.get(event.job_id)
        if op.kind == "enqueue":
            if known is not None:
                return known, False
            if b.ready >= op.capacity:
                raise QueueFull(op.capacity)
            return b.record(None, event), True  # its created_seq is set once numbered
        if known is None:
            raise UnknownJob(event.job_id)
        if event.version != known.version + 1:
            raise VersionConflict(event.job_id, event.version - 1, known.version)
        return b.record(known, event)

    async def enqueue(self, event: Event, *, capacity: int) -> tuple[JobView, bool]:
        result: tuple[JobView, bool] = await self._op("enqueue", event=event, capacity=capacity)
        return result

    async def append(self, event: Event) -> JobView:
        view: JobView = await self._op("append", event=event)
        return view

    async def claim_ready(self, *, at_ms: int) -> JobView | None:
        view: JobView | None = await self._op("claim", at_ms=at_ms)
        return view

    async def renew_leases(self, job_ids: Collection[str]) -> int:
        status = await self.pool.execute(_RENEW, list(job_ids), self.instance_id, self._lease_ms)
        return int(status.rsplit(" ", 1)[1])

    async def recover_expired(self) -> int:
        await self._ensure_listening()
        if await self.pool.fetchval(_ANY_EXPIRED) is None:
            return 0  # the usual case: no batch, no kasp_log lock
        count: int = await self._op("recover")
        if count:
            log.warning(
                "%d attempts lost their lease (their instance stopped renewing); recorded as interrupted",
                count,
                extra={"action": "store_recovered"},
            )
        return count

    # -- reading -----------------------------------------------------------

    async def next_due_ms(self) -> int | None:
        value: int | None = await self.pool.fetchval(
            "SELECT min(ready_at_ms) FROM kasp_jobs WHERE state = 'queued'"
        )
        return value

    async def get_job(self, job_id: str) -> JobView | None:
        row = await self.pool.fetchrow(_SELECT_JOB, job_id)
        return view_from_row(row) if row is not None else None

    async def list_jobs(self, *, state: JobState | None, limit: int, cursor: int) -> JobPage:
        if state is None:
            sql = f"SELECT {_JOB_COLS} FROM kasp_jobs WHERE created_seq > $1 ORDER BY created_seq LIMIT $2"
            rows = await self.pool.fetch(sql, cursor, limit)
        else:
            sql = (
                f"SELECT {_JOB_COLS} FROM kasp_jobs WHERE state = $3 AND created_seq > $1 "
                "ORDER BY created_seq LIMIT $2"
            )
            rows = await self.pool.fetch(sql, cursor, limit, state.value)
        jobs = [view_from_row(r) for r in rows]
        return JobPage(jobs, jobs[-1].created_seq if len(jobs) == limit else None)

    async def job_events(self, job_id: str) -> list[Event] | None:
        sql = f"SELECT {_EVENT_COLS} FROM kasp_events WHERE job_id = $1 ORDER BY version"
        events = [event_from_row(r) for r in await self.pool.fetch(sql, job_id)]
        return events or None

    async def read_events(
        self, *, after: int, limit: int, job_id: str | None, type: EventType | None
    ) -> list[Event]:
        where = ["seq > $1"]
        params: list[Any] = [after, limit]
        if job_id is not None:
            params.append(job_id)
            where.append(f"job_id = ${len(params)}")
        if type is not None:
            params.append(type.value)
            where.append(f"type = ${len(params)}")
        sql = f"SELECT {_EVENT_COLS} FROM kasp_events WHERE {' AND '.join(where)} ORDER BY seq LIMIT $2"
        rows = await self.pool.fetch(sql, *params)
        return [event_from_row(r) for r in rows]

    async def stats(self) -> StoreStats:
        row = await self.pool.fetchrow(
            "SELECT last_seq, event_count, queued, running, done, failed, "
            "(SELECT count(*) FROM kasp_jobs WHERE state = 'queued' AND ready_at_ms > $1) FROM kasp_log",
            now_ms(),
        )
        last_seq, event_count, queued, running, done, failed, delayed = row
        return StoreStats(
            jobs={
                JobState.QUEUED: queued,
                JobState.RUNNING: running,
                JobState.DONE: done,
                JobState.FAILED: failed,
            },
            ready=max(0, queued - delayed),
            delayed=delayed,
            event_count=event_count,
            last_seq=last_seq,
        )

    async def unfinished_job_ids(self) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT id FROM kasp_jobs WHERE state IN ('queued', 'running') ORDER BY created_seq"
        )
        return [r[0] for r in rows]


async def _migrate(conn: asyncpg.Connection) -> None:
    """Bring the database to SCHEMA_VERSION; idempotent, safe when instances start together."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        await conn.execute("CREATE TABLE IF NOT EXISTS kasp_schema (version integer NOT NULL)")
        version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM kasp_schema")
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database has kasp schema version {version}, newer than this kasp's {SCHEMA_VERSION}"
            )
        for step in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[step]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO kasp_schema VALUES ($1)", step + 1)
            log.info("PostgreSQL schema upgraded to version %d", step + 1, extra={"action": "schema_upgrade"})


async def create_database(admin_dsn: str, name: str) -> None:
    """CREATE DATABASE `name` (tests and benchmarks use a fresh one per run)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    """DROP DATABASE `name`, disconnecting whoever still uses it."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def drop_schema(dsn: str) -> None:
    """Remove kasp's tables, function and schema version from a database (a clean slate)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "DROP TABLE IF EXISTS kasp_events, kasp_jobs, kasp_log, kasp_schema CASCADE; "
            "DROP FUNCTION IF EXISTS kasp_notify() CASCADE"
        )
    finally:
        await conn.close()


class _GuardedPool:
    """The pool's query methods, with driver errors classified (faults.py) at this one seam."""

    __slots__ = ("_health", "_pool")

    def __init__(self, pool: asyncpg.Pool, health: StoreHealth) -> None:
        self._pool = pool
        self._health = health

    def acquire(self) -> Any:
        return self._pool.acquire()  # used by _commit, whose errors _flush classifies

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


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to one list per column: the arrays `unnest` turns back into rows."""
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def _fail(ops: Sequence[_Op], exc: BaseException) -> None:
    for op in ops:
        if not op.fut.done():
            op.fut.set_exception(exc)


def dsn_for(admin_dsn: str, name: str) -> str:
    """The same server's DSN with another database name."""
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{name}"


__all__ = ["PostgresStore", "create_database", "drop_database", "drop_schema", "dsn_for"]
