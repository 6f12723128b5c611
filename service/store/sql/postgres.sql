-- Every statement of the PostgreSQL driver (service/store/postgres.py), by name; `$n` parameters.
-- kasp_jobs columns are listed in service/store/rows.py's JOB_COLUMNS order. Times measured on
-- the database's clock are `(extract(epoch FROM clock_timestamp()) * 1000)::bigint`.

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
-- Schema 3: notifications name the job (cancel and ?wait across instances) and a scheduled enqueue's due time.
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

-- name: lock_jobs
-- Lock the rows of these jobs (the known ones) for this transaction, in id order.
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE;

-- name: claimable
-- Lock up to $2 jobs ready at $1 in claim order, skipping rows another transaction holds.
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs
WHERE state = 'queued' AND ready_at_ms <= $1
ORDER BY priority DESC, ready_at_ms, created_seq
LIMIT $2 FOR UPDATE SKIP LOCKED;

-- name: lock_jobs_and_claimable
-- Both reads of a batch in one round trip: lock these jobs ($1, in id order; first column true), then up to $3 jobs ready at $2 in claim order, skipping held rows (false).
WITH named AS (
    SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
           next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
    FROM kasp_jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE
), ready AS (
    SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
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
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
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
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
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
-- A batch's whole write in one round trip: events ($1..$9), job rows with lease owners ($10..$26), lease ms ($27), last seq ($28), event count change ($29), jobs by state changes ($30..$34).
WITH e AS (
    INSERT INTO kasp_events (seq, job_id, version, type, at_ms, from_state, to_state, attempt, data)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::text[], $5::bigint[], $6::text[],
                         $7::text[], $8::integer[], $9::text[])
), j AS (
    INSERT INTO kasp_jobs (id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms,
                           updated_at_ms, next_attempt_at_ms, version, created_seq, ready_at_ms, priority,
                           timeout_ms, result, lease_owner, lease_expires_ms)
    SELECT u.id, u.payload, u.max_retries, u.state, u.attempts, u.budget_used, u.last_error, u.created_at_ms,
           u.updated_at_ms, u.next_attempt_at_ms, u.version, u.created_seq, u.ready_at_ms, u.priority,
           u.timeout_ms, u.result, u.lease_owner,
           CASE WHEN u.lease_owner IS NULL THEN NULL
                ELSE (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $27::bigint END
    FROM unnest($10::text[], $11::text[], $12::integer[], $13::text[], $14::integer[], $15::integer[],
                $16::text[], $17::bigint[], $18::bigint[], $19::bigint[], $20::integer[], $21::bigint[],
                $22::bigint[], $23::integer[], $24::bigint[], $25::text[], $26::text[])
        AS u(id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
             next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result, lease_owner)
    ON CONFLICT (id) DO UPDATE SET
        payload = EXCLUDED.payload, max_retries = EXCLUDED.max_retries, state = EXCLUDED.state,
        attempts = EXCLUDED.attempts, budget_used = EXCLUDED.budget_used, last_error = EXCLUDED.last_error,
        created_at_ms = EXCLUDED.created_at_ms, updated_at_ms = EXCLUDED.updated_at_ms,
        next_attempt_at_ms = EXCLUDED.next_attempt_at_ms, version = EXCLUDED.version,
        created_seq = EXCLUDED.created_seq, ready_at_ms = EXCLUDED.ready_at_ms, priority = EXCLUDED.priority,
        timeout_ms = EXCLUDED.timeout_ms, result = EXCLUDED.result,
        lease_owner = EXCLUDED.lease_owner, lease_expires_ms = EXCLUDED.lease_expires_ms
)
UPDATE kasp_log SET last_seq = $28, event_count = event_count + $29,
    queued = queued + $30, running = running + $31, done = done + $32, failed = failed + $33,
    cancelled = cancelled + $34;

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
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE id = $1;

-- name: list_jobs
-- A page of jobs in enqueue order after a cursor ($1), at most $2.
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE created_seq > $1 ORDER BY created_seq LIMIT $2;

-- name: list_jobs_in_state
-- A page of jobs in one state ($3) in enqueue order after a cursor ($1), at most $2.
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
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
