-- Every statement of the PostgreSQL driver (service/store/postgres.py), by name; `$n` parameters.
-- kasp_jobs columns are listed in service/store/rows.py's JOB_COLUMNS order. Times measured on
-- the database's clock are `(extract(epoch FROM clock_timestamp()) * 1000)::bigint`.
-- A job's payload (schema 5) lives in its `enqueued` event (version 1) only: every read of a job row
-- takes `coalesce(payload, <that event's data>)`, one probe of kasp_events_job_id_version_key, and
-- rows.Rows reads the payload out of either (a JSON string literal, or the event's JSON object).

-- name: schema_lock
-- Serialise schema upgrades of instances starting together (advisory lock "kasp").
SELECT pg_advisory_xact_lock(1801548656);

-- name: schema_table
-- The schema version table, one row per applied step.
CREATE TABLE IF NOT EXISTS kasp_schema (version integer NOT NULL);

-- name: schema_version
-- The highest applied schema step (0: none).
SELECT coalesce(max(version), 0) FROM kasp_schema;

-- name: schema_record
-- Record an applied schema step.
INSERT INTO kasp_schema VALUES ($1);

-- name: schema_1
-- Schema 1: the log head, the log, the projection, their indexes and the wake-up trigger.
CREATE TABLE kasp_log (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_seq bigint NOT NULL,
    event_count bigint NOT NULL,
    queued bigint NOT NULL,
    running bigint NOT NULL,
    done bigint NOT NULL,
    failed bigint NOT NULL
);
INSERT INTO kasp_log VALUES (true, 0, 0, 0, 0, 0, 0);
CREATE TABLE kasp_events (
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
);
CREATE TABLE kasp_jobs (
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
);
CREATE INDEX kasp_jobs_queue ON kasp_jobs (ready_at_ms, created_seq) WHERE state = 'queued';
CREATE INDEX kasp_jobs_state ON kasp_jobs (state, created_seq);
CREATE INDEX kasp_jobs_leases ON kasp_jobs (lease_expires_ms) WHERE state = 'running';
CREATE FUNCTION kasp_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kasp_events', current_setting('application_name') || ' ' || NEW.type || ' ' ||
        CASE WHEN NEW.type = 'retry_scheduled'
             THEN (NEW.at_ms + (NEW.data::jsonb ->> 'delay_ms')::bigint)::text ELSE '' END);
    RETURN NULL;
END $$;
CREATE TRIGGER kasp_events_notify AFTER INSERT ON kasp_events
    FOR EACH ROW EXECUTE FUNCTION kasp_notify();

-- name: schema_2
-- Schema 2: job control (priority, timeout, result, cancelled), the claim order index, retention's index, NUL-safe text.
ALTER TABLE kasp_log ADD COLUMN cancelled bigint NOT NULL DEFAULT 0;
ALTER TABLE kasp_jobs ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN timeout_ms bigint,
    ADD COLUMN result text;
-- payload and last_error become JSON string literals: PostgreSQL text cannot hold U+0000.
UPDATE kasp_jobs SET payload = to_json(payload)::text, last_error = to_json(last_error)::text;
CREATE INDEX kasp_jobs_claim ON kasp_jobs (priority DESC, ready_at_ms, created_seq) WHERE state = 'queued';
-- jsonb cannot hold U+0000 either: read delay_ms off the compact JSON text (a key, never inside a string).
CREATE OR REPLACE FUNCTION kasp_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kasp_events', current_setting('application_name') || ' ' || NEW.type || ' ' ||
        CASE WHEN NEW.type = 'retry_scheduled'
             THEN (NEW.at_ms + substring(NEW.data FROM '"delay_ms":([0-9]+)')::bigint)::text ELSE '' END);
    RETURN NULL;
END $$;
CREATE INDEX kasp_jobs_finished ON kasp_jobs (updated_at_ms) WHERE state IN ('done', 'failed', 'cancelled');

-- name: schema_3
-- Schema 3: no lease index, so a lease renewal is a HOT update and a claim writes one index entry less.
-- Running jobs are a few per worker (WORKERS x instances): the lease queries read them through
-- kasp_jobs_state, and kasp_jobs_leases only cost an index entry per claim and per renewal.
DROP INDEX kasp_jobs_leases;

-- name: schema_4
-- Schema 4: notifications name the job (cancel and ?wait across instances) and a scheduled enqueue's due time.
-- Payload: "<application_name> <type> <due_ms or empty> <job_id>" (job ids hold no spaces). Values are
-- read off the compact JSON text, as in schema 2: "run_at":" only matches the key, never inside a string.
CREATE OR REPLACE FUNCTION kasp_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kasp_events', current_setting('application_name') || ' ' || NEW.type || ' ' ||
        CASE WHEN NEW.type = 'retry_scheduled'
             THEN (NEW.at_ms + substring(NEW.data FROM '"delay_ms":([0-9]+)')::bigint)::text
             WHEN NEW.type = 'enqueued' AND NEW.data LIKE '%"run_at":"%'
             THEN (extract(epoch FROM substring(NEW.data FROM '"run_at":"([^"]+)"')::timestamptz)
                   * 1000)::bigint::text
             ELSE '' END || ' ' || NEW.job_id);
    RETURN NULL;
END $$;

-- name: schema_5
-- Schema 5: less written and sent per job. kasp_jobs gets a new row version, with an entry in every index, on each
-- of a job's events (state is indexed, so no update is HOT); measured per 100-byte-payload job, of 2,820
-- WAL bytes the payload copies took ~275 and the created_seq index ~207 (docs/PERFORMANCE.md, "WAL per job").
-- So a job's payload is written once, in its enqueued event (new rows keep it NULL, older rows keep theirs),
-- and enqueue order is read off the log: created_seq is the seq of the job's enqueued event (version 1).
ALTER TABLE kasp_jobs ALTER COLUMN payload DROP NOT NULL;
ALTER TABLE kasp_jobs DROP CONSTRAINT IF EXISTS kasp_jobs_created_seq_key;
-- No notification for `started`: no other instance acts on one (service/pool.py's and service/waiters.py's
-- remote listeners), and each cost a trigger call here and a parsed notice in every instance, a third of them.
DROP TRIGGER kasp_events_notify ON kasp_events;
CREATE TRIGGER kasp_events_notify AFTER INSERT ON kasp_events
    FOR EACH ROW WHEN (NEW.type <> 'started') EXECUTE FUNCTION kasp_notify();

-- name: lock_jobs
-- Lock the rows of these jobs (the known ones) for this transaction, in id order.
SELECT id, coalesce(payload, (SELECT data FROM kasp_events WHERE job_id = kasp_jobs.id AND version = 1)),
       max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE;

-- name: claimable
-- Lock up to $2 jobs ready at $1 in claim order, skipping rows another transaction holds.
SELECT id, coalesce(payload, (SELECT data FROM kasp_events WHERE job_id = kasp_jobs.id AND version = 1)),
       max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs
WHERE state = 'queued' AND ready_at_ms <= $1
ORDER BY priority DESC, ready_at_ms, created_seq
LIMIT $2 FOR UPDATE SKIP LOCKED;

-- name: lock_jobs_and_claimable
-- Both reads of a batch in one round trip: lock these jobs ($1, in id order; first column true), then up to $3 jobs ready at $2 in claim order, skipping held rows (false).
WITH named AS (
    SELECT id, coalesce(payload, (SELECT data FROM kasp_events WHERE job_id = kasp_jobs.id AND version = 1)),
           max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
           next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
    FROM kasp_jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE
), ready AS (
    SELECT id, coalesce(payload, (SELECT data FROM kasp_events WHERE job_id = kasp_jobs.id AND version = 1)),
           max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
           next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
    FROM kasp_jobs
    WHERE state = 'queued' AND ready_at_ms <= $2
    ORDER BY priority DESC, ready_at_ms, created_seq
    LIMIT $3 FOR UPDATE SKIP LOCKED
)
SELECT true, * FROM named
UNION ALL
SELECT false, * FROM ready;

-- name: expired
-- Lock up to $1 running attempts whose lease ran out (the database's clock), skipping held rows.
SELECT id, coalesce(payload, (SELECT data FROM kasp_events WHERE job_id = kasp_jobs.id AND version = 1)),
       max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs
WHERE state = 'running' AND lease_expires_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint
ORDER BY lease_expires_ms LIMIT $1 FOR UPDATE SKIP LOCKED;

-- name: any_expired
-- Whether any lease has run out (checked without a transaction before a recovery step).
SELECT 1 FROM kasp_jobs
WHERE state = 'running' AND lease_expires_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint
LIMIT 1;

-- name: evictable
-- Lock up to $1 finished jobs, oldest finished first, skipping held rows.
SELECT id, coalesce(payload, (SELECT data FROM kasp_events WHERE job_id = kasp_jobs.id AND version = 1)),
       max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE state IN ('done', 'failed', 'cancelled')
ORDER BY updated_at_ms LIMIT $1 FOR UPDATE SKIP LOCKED;

-- name: lock_log
-- Lock the log's head until COMMIT: last seq, queued jobs, finished jobs.
SELECT last_seq, queued, done + failed + cancelled FROM kasp_log FOR UPDATE;

-- name: lock_log_counting_delayed
-- lock_log, and in the same round trip the queued jobs not yet due at $1 (they hold no QUEUE_SIZE place).
SELECT last_seq, queued, done + failed + cancelled,
       (SELECT count(*) FROM kasp_jobs WHERE state = 'queued' AND ready_at_ms > $1)
FROM kasp_log FOR UPDATE;

-- name: write_batch
-- A batch's whole write in one round trip, numbering its events from the log's head, which it locks (or already holds): events without seq ($1..$8), new jobs without payload ($9..$23, all queued: no lease), changed jobs without payload, with lease owners ($24..$39), lease ms ($40), events ($41), jobs by state changes ($42..$46). Returns (the last seq before these events, finished jobs before them).
-- Job rows are already locked by the batch's reads, so only the head can wait, and it is the last lock a writer takes.
-- Changed jobs are upserted as whole rows: measured (bench/pg_costs.py), an UPDATE ... FROM unnest of
-- only the changed columns cost PostgreSQL ~50% more CPU per job than ON CONFLICT on the primary key.
-- No payload is written (NULL): it is in the job's enqueued event, and every row version of a job
-- would otherwise copy it again (schema 5: ~310 of 2,820 WAL bytes per job, docs/PERFORMANCE.md).
WITH head AS (
    UPDATE kasp_log SET last_seq = last_seq + $41::bigint, event_count = event_count + $41::bigint,
        queued = queued + $42::bigint, running = running + $43::bigint, done = done + $44::bigint,
        failed = failed + $45::bigint, cancelled = cancelled + $46::bigint
    RETURNING last_seq - $41::bigint AS base,
        done + failed + cancelled - ($44::bigint + $45::bigint + $46::bigint) AS finished
), e AS (
    INSERT INTO kasp_events (seq, job_id, version, type, at_ms, from_state, to_state, attempt, data)
    SELECT head.base + u.n, u.job_id, u.version, u.type, u.at_ms, u.from_state, u.to_state, u.attempt, u.data
    FROM head, unnest($1::text[], $2::integer[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                      $7::integer[], $8::text[]) WITH ORDINALITY
        AS u(job_id, version, type, at_ms, from_state, to_state, attempt, data, n)
), created AS (
    INSERT INTO kasp_jobs (id, max_retries, state, attempts, budget_used, last_error, created_at_ms,
                           updated_at_ms, next_attempt_at_ms, version, created_seq, ready_at_ms, priority,
                           timeout_ms, result)
    SELECT * FROM unnest($9::text[], $10::integer[], $11::text[], $12::integer[], $13::integer[],
                         $14::text[], $15::bigint[], $16::bigint[], $17::bigint[], $18::integer[],
                         $19::bigint[], $20::bigint[], $21::integer[], $22::bigint[], $23::text[])
), changed AS (
    INSERT INTO kasp_jobs (id, max_retries, state, attempts, budget_used, last_error, created_at_ms,
                           updated_at_ms, next_attempt_at_ms, version, created_seq, ready_at_ms, priority,
                           timeout_ms, result, lease_owner, lease_expires_ms)
    SELECT u.*, CASE WHEN u.lease_owner IS NULL THEN NULL
                     ELSE (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $40::bigint END
    FROM unnest($24::text[], $25::integer[], $26::text[], $27::integer[], $28::integer[],
                $29::text[], $30::bigint[], $31::bigint[], $32::bigint[], $33::integer[], $34::bigint[],
                $35::bigint[], $36::integer[], $37::bigint[], $38::text[], $39::text[])
        AS u(id, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
             next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result, lease_owner)
    ON CONFLICT (id) DO UPDATE SET
        state = EXCLUDED.state, attempts = EXCLUDED.attempts, budget_used = EXCLUDED.budget_used,
        last_error = EXCLUDED.last_error, updated_at_ms = EXCLUDED.updated_at_ms,
        next_attempt_at_ms = EXCLUDED.next_attempt_at_ms, version = EXCLUDED.version,
        ready_at_ms = EXCLUDED.ready_at_ms, result = EXCLUDED.result,
        lease_owner = EXCLUDED.lease_owner, lease_expires_ms = EXCLUDED.lease_expires_ms
)
SELECT base, finished FROM head;

-- name: evict
-- Delete these finished jobs ($1) and their events, and take the events off the retained count.
WITH gone_events AS (
    DELETE FROM kasp_events WHERE job_id = ANY($1::text[]) RETURNING 1
), gone_jobs AS (
    DELETE FROM kasp_jobs WHERE id = ANY($1::text[])
)
UPDATE kasp_log SET event_count = event_count - (SELECT count(*) FROM gone_events);

-- name: vacuum
-- Make the space of rows retention deleted reusable, and refresh the planner's statistics.
VACUUM (ANALYZE) kasp_events, kasp_jobs;

-- name: renew_leases
-- Extend this instance's ($2) leases on these running jobs ($1) by $3 ms; rows a batch holds are skipped (they are changing anyway).
UPDATE kasp_jobs SET lease_expires_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $3
WHERE id IN (SELECT id FROM kasp_jobs WHERE id = ANY($1::text[]) AND lease_owner = $2
             AND state = 'running' FOR UPDATE SKIP LOCKED);

-- name: next_due
-- When the earliest queued job is (or was) due.
SELECT min(ready_at_ms) FROM kasp_jobs WHERE state = 'queued';

-- name: job_by_id
-- One job's row.
SELECT id, coalesce(payload, (SELECT data FROM kasp_events WHERE job_id = kasp_jobs.id AND version = 1)),
       max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE id = $1;

-- name: list_jobs
-- A page of jobs in enqueue order after a cursor ($1), at most $2: their enqueued events (version 1) in seq
-- order, which is created_seq order (schema 5 has no created_seq index), each joined to its row.
SELECT j.id, coalesce(j.payload, e.data), j.max_retries, j.state, j.attempts, j.budget_used, j.last_error,
       j.created_at_ms, j.updated_at_ms, j.next_attempt_at_ms, j.version, j.created_seq, j.ready_at_ms,
       j.priority, j.timeout_ms, j.result
FROM kasp_events e JOIN kasp_jobs j ON j.id = e.job_id
WHERE e.seq > $1 AND e.version = 1 ORDER BY e.seq LIMIT $2;

-- name: list_jobs_in_state
-- A page of jobs in one state ($3) in enqueue order after a cursor ($1), at most $2.
SELECT id, coalesce(payload, (SELECT data FROM kasp_events WHERE job_id = kasp_jobs.id AND version = 1)),
       max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE state = $3 AND created_seq > $1 ORDER BY created_seq LIMIT $2;

-- name: job_events
-- One job's events in order.
SELECT seq, job_id, version, type, at_ms, from_state, to_state, attempt, data
FROM kasp_events WHERE job_id = $1 ORDER BY version;

-- name: events_after
-- Events after a seq ($1), at most $2, in seq order.
SELECT seq, job_id, version, type, at_ms, from_state, to_state, attempt, data
FROM kasp_events WHERE seq > $1 ORDER BY seq LIMIT $2;

-- name: events_after_of_job
-- One job's ($3) events after a seq ($1), at most $2.
SELECT seq, job_id, version, type, at_ms, from_state, to_state, attempt, data
FROM kasp_events WHERE seq > $1 AND job_id = $3 ORDER BY seq LIMIT $2;

-- name: events_after_of_type
-- Events of one type ($3) after a seq ($1), at most $2.
SELECT seq, job_id, version, type, at_ms, from_state, to_state, attempt, data
FROM kasp_events WHERE seq > $1 AND type = $3 ORDER BY seq LIMIT $2;

-- name: events_after_of_job_and_type
-- One job's ($3) events of one type ($4) after a seq ($1), at most $2.
SELECT seq, job_id, version, type, at_ms, from_state, to_state, attempt, data
FROM kasp_events WHERE seq > $1 AND job_id = $3 AND type = $4 ORDER BY seq LIMIT $2;

-- name: stats
-- The log head and the count of delayed jobs (queued, not due at $1): /stats without a scan of the log.
SELECT last_seq, event_count, queued, running, done, failed, cancelled,
       (SELECT count(*) FROM kasp_jobs WHERE state = 'queued' AND ready_at_ms > $1)
FROM kasp_log;

-- name: unfinished_ids
-- Ids of jobs still queued or running, in enqueue order.
SELECT id FROM kasp_jobs WHERE state IN ('queued', 'running') ORDER BY created_seq;
