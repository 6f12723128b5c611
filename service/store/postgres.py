"""The shared durable store: PostgreSQL through asyncpg, for one or many kasp instances.

Every change is one transaction that writes the event row, the job row (the
projection) and the `kasp_log` row together; callers get their answer only
after COMMIT.

Seq and visibility. `kasp_log` is a single row holding the last seq and the
job counts. Each writing transaction updates it as its LAST step before
inserting its event(s), taking that row's lock until COMMIT. So transactions
that append events are serialised on that lock: the one that takes seq n+1
can only do so after the one holding seq n has committed and become visible
(PostgreSQL releases row locks after the commit is visible to new snapshots).
Commit order is therefore seq order, every snapshot sees a gap-free prefix of
the log, and a reader paging with `seq > after` never skips an event that a
later read would return, however many instances append. The price is that
appends are serialised on one row; each transaction holds it only for its
last statements and COMMIT (see docs/STORAGE.md for figures). The same lock
makes QUEUE_SIZE admission exact across instances: an enqueue counts ready
jobs only once it holds it.

Claims. `claim_ready` picks the oldest ready job with `FOR UPDATE SKIP
LOCKED` (a job being claimed elsewhere is skipped, not waited for), records
`started` and gives the attempt a lease owned by this instance, measured on
the database's clock so instances need not agree on time. Locks are always
taken job row(s) first, `kasp_log` last, so transactions cannot deadlock.

Wake-ups. A trigger NOTIFYs channel `kasp_events` for every event with
"<application_name> <type> <due_ms>"; each instance LISTENs on a dedicated
connection and tells its remote listeners about other instances' events
(its own arrive through `add_listener`). Notifications are best effort (a
dropped LISTEN connection is re-opened), so idle workers also poll every
`POLL_INTERVAL_S`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import asyncpg

from domain.errors import QueueFull, UnknownJob, VersionConflict
from domain.events import Event
from domain.job import interrupt, start
from domain.projection import JobView, apply
from domain.states import EventType, JobState
from service.clock import now_ms
from service.store.base import EventListener, JobPage, RemoteListener, StoreStats
from service.store.rows import EVENT_COLUMNS, JOB_COLUMNS, event_from_row, event_row, view_from_row, view_row

log = logging.getLogger("kasp.store.postgres")

POLL_INTERVAL_S = 1.0  # a guess: the fallback when a notification is lost; also the SSE poll pace
POOL_MAX_SIZE = 10  # a guess: WORKERS' claims plus concurrent requests; 100 connections / 10 instances
RECOVER_BATCH = 100  # expired leases recovered per transaction
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
_EVENT_PARAMS = ", ".join(f"${i + 1}::{t}" for i, t in enumerate(_EVENT_TYPES))
_N_EVENT = len(EVENT_COLUMNS)

_SELECT_JOB = f"SELECT {_JOB_COLS} FROM kasp_jobs WHERE id = $1"
_LOCK_JOB = _SELECT_JOB + " FOR UPDATE"
_TAKE_SEQS = """UPDATE kasp_log SET last_seq = last_seq + $1, event_count = event_count + $1,
    queued = queued + $2, running = running + $3, done = done + $4, failed = failed + $5
    RETURNING last_seq, queued"""
_NOT_DUE = "SELECT count(*) FROM kasp_jobs WHERE state = 'queued' AND ready_at_ms > $1"
_INSERT_JOB_AND_EVENT = f"""WITH j AS (
        INSERT INTO kasp_jobs ({_JOB_COLS}) VALUES (
            {", ".join(f"${_N_EVENT + i + 1}::{t}" for i, t in enumerate(_JOB_TYPES))})
        RETURNING 1)
    INSERT INTO kasp_events ({_EVENT_COLS}) SELECT {_EVENT_PARAMS} FROM j"""
# Parameters: the event's columns ($1..$9, so $2 is the job id), then the job's
# columns but its id, then lease owner, lease duration (ms), the prior version.
_OWNER_P = _N_EVENT + len(JOB_COLUMNS)
_JOB_SETS = ", ".join(
    f"{c} = ${_N_EVENT + i + 1}::{t}"
    for i, (c, t) in enumerate(zip(JOB_COLUMNS[1:], _JOB_TYPES[1:], strict=True))
)
_UPDATE_JOB_AND_INSERT_EVENT = f"""WITH j AS (
        UPDATE kasp_jobs SET {_JOB_SETS},
            lease_owner = ${_OWNER_P}::text,
            lease_expires_ms = CASE WHEN ${_OWNER_P}::text IS NULL THEN NULL
                ELSE {_DB_NOW_MS} + ${_OWNER_P + 1}::bigint END
        WHERE id = $2::text AND version = ${_OWNER_P + 2}::integer
        RETURNING 1)
    INSERT INTO kasp_events ({_EVENT_COLS}) SELECT {_EVENT_PARAMS} FROM j"""
_CLAIM = f"""SELECT {_JOB_COLS} FROM kasp_jobs
    WHERE state = 'queued' AND ready_at_ms <= $1
    ORDER BY ready_at_ms, created_seq LIMIT 1 FOR UPDATE SKIP LOCKED"""
_EXPIRED = f"""SELECT {_JOB_COLS} FROM kasp_jobs
    WHERE state = 'running' AND lease_expires_ms < {_DB_NOW_MS}
    ORDER BY lease_expires_ms LIMIT {RECOVER_BATCH} FOR UPDATE SKIP LOCKED"""
_RENEW = f"""UPDATE kasp_jobs SET lease_expires_ms = {_DB_NOW_MS} + $3
    WHERE id = ANY($1::text[]) AND lease_owner = $2 AND state = 'running'"""

_STATE_INDEX = {JobState.QUEUED: 0, JobState.RUNNING: 1, JobState.DONE: 2, JobState.FAILED: 3}


def _state_deltas(prev: JobView | None, view: JobView) -> list[int]:
    deltas = [0, 0, 0, 0]
    if prev is not None:
        deltas[_STATE_INDEX[prev.state]] -= 1
    deltas[_STATE_INDEX[view.state]] += 1
    return deltas


def _would_be(prev: JobView | None, event: Event) -> JobView:
    """The view after `event`, before its seq is known (to count the state change)."""
    return apply(prev, dataclasses.replace(event, seq=prev.created_seq if prev is not None else 0))


class PostgresStore:
    poll_interval_s: float | None = POLL_INTERVAL_S

    def __init__(self, dsn: str, *, lease_timeout_s: float) -> None:
        self.dsn = dsn
        self.lease_s = lease_timeout_s
        self.instance_id = f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._app_name = f"kasp {self.instance_id}"
        self._pool: asyncpg.Pool | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self._listeners: list[EventListener] = []
        self._remote_listeners: list[RemoteListener] = []

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        settings = {"application_name": self._app_name}
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=POOL_MAX_SIZE, server_settings=settings
        )
        async with self._pool.acquire() as conn:
            await _migrate(conn)
        await self._listen()

    async def close(self) -> None:
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
        await conn.add_listener(CHANNEL, self._on_notify)
        self._listen_conn = conn

    async def _ensure_listening(self) -> None:
        """Re-open a LISTEN connection that dropped (until then, polling covers)."""
        if self._listen_conn is None or self._listen_conn.is_closed():
            log.warning("LISTEN connection lost; reconnecting", extra={"action": "store_relisten"})
            await self._listen()

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
                listener(event)

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "the store is not open"
        return self._pool

    # -- writing -----------------------------------------------------------

    async def _record(
        self, conn: asyncpg.Connection, prev: JobView | None, event: Event
    ) -> tuple[JobView, Event]:
        """Write `event` and the job row after it; the caller's transaction holds the job row."""
        deltas = _state_deltas(prev, _would_be(prev, event))
        seq = (await conn.fetchrow(_TAKE_SEQS, 1, *deltas))[0]  # the kasp_log lock: see the module doc
        event = dataclasses.replace(event, seq=seq)
        view = apply(prev, event)
        if prev is None:
            status = await conn.execute(_INSERT_JOB_AND_EVENT, *event_row(event), *view_row(view))
        else:
            owner = self.instance_id if view.state is JobState.RUNNING else None
            lease_ms = int(self.lease_s * 1000)
            status = await conn.execute(
                _UPDATE_JOB_AND_INSERT_EVENT,
                *event_row(event),
                *view_row(view)[1:],
                owner,
                lease_ms,
                prev.version,
            )
        if status != "INSERT 0 1":
            raise VersionConflict(event.job_id, event.version - 1, event.version)
        return view, event

    async def enqueue(self, event: Event, *, capacity: int) -> tuple[JobView, bool]:
        existing = await self.get_job(event.job_id)
        if existing is not None:
            return existing, False
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                deltas = [1, 0, 0, 0]
                seq, queued = await conn.fetchrow(_TAKE_SEQS, 1, *deltas)
                not_due = await conn.fetchval(_NOT_DUE, now_ms())
                if queued - 1 - not_due >= capacity:
                    raise QueueFull(capacity)
                event = dataclasses.replace(event, seq=seq)
                view = apply(None, event)
                await conn.execute(_INSERT_JOB_AND_EVENT, *event_row(event), *view_row(view))
        except asyncpg.UniqueViolationError:
            existing = await self.get_job(event.job_id)  # another instance enqueued it just now
            if existing is None:
                raise
            return existing, False
        self._notify_local((event,))
        return view, True

    async def append(self, event: Event) -> JobView:
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    row = await conn.fetchrow(_LOCK_JOB, event.job_id)
                    if row is None:
                        raise UnknownJob(event.job_id)
                    prev = view_from_row(row)
                    if event.version != prev.version + 1:
                        raise VersionConflict(event.job_id, event.version - 1, prev.version)
                    view, event = await self._record(conn, prev, event)
            except asyncpg.UniqueViolationError:
                raise VersionConflict(event.job_id, event.version - 1, event.version) from None
        self._notify_local((event,))
        return view

    async def claim_ready(self, *, at_ms: int) -> JobView | None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_CLAIM, at_ms)
            if row is None:
                return None
            prev = view_from_row(row)
            view, event = await self._record(conn, prev, start(prev, at_ms=at_ms))
        self._notify_local((event,))
        return view

    async def renew_leases(self, job_ids: Collection[str]) -> int:
        status = await self.pool.execute(_RENEW, list(job_ids), self.instance_id, int(self.lease_s * 1000))
        return int(status.rsplit(" ", 1)[1])

    async def recover_expired(self) -> int:
        await self._ensure_listening()
        recovered: list[Event] = []
        async with self.pool.acquire() as conn, conn.transaction():
            at_ms = now_ms()
            for row in await conn.fetch(_EXPIRED):
                prev = view_from_row(row)
                _, event = await self._record(
                    conn, prev, interrupt(prev, at_ms=at_ms, reason=LEASE_EXPIRED_REASON)
                )
                recovered.append(event)
        if recovered:
            log.warning(
                "%d attempts lost their lease (their instance stopped renewing); recorded as interrupted",
                len(recovered),
                extra={"action": "store_recovered"},
            )
            self._notify_local(recovered)
        return len(recovered)

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


def dsn_for(admin_dsn: str, name: str) -> str:
    """The same server's DSN with another database name."""
    base, _, _ = admin_dsn.rpartition("/")
    return f"{base}/{name}"


__all__ = ["PostgresStore", "create_database", "drop_database", "drop_schema", "dsn_for"]
