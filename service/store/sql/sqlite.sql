-- Every statement of the SQLite driver (service/store/sqlite.py), by name; `?` parameters.
-- kasp_jobs columns are listed in service/store/rows.py's JOB_COLUMNS order.

-- name: schema_1_events
-- Schema 1: the log, one row per event, seq in commit order.
CREATE TABLE kasp_events (
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
);

-- name: schema_1_jobs
-- Schema 1: the projection, one row per job.
CREATE TABLE kasp_jobs (
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
);

-- name: schema_1_queue_index
-- Schema 1: queued jobs by due time (delayed counts, the next due time); not partial: without ANALYZE the planner would pick kasp_jobs_state.
CREATE INDEX kasp_jobs_queue ON kasp_jobs (state, ready_at_ms, created_seq);

-- name: schema_1_state_index
-- Schema 1: listings by state in enqueue order.
CREATE INDEX kasp_jobs_state ON kasp_jobs (state, created_seq);

-- name: schema_2_priority
-- Schema 2 (job control, issue 9): a job's priority, higher starts first.
ALTER TABLE kasp_jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;

-- name: schema_2_timeout
-- Schema 2: a job's own attempt timeout in ms (NULL: the service's ATTEMPT_TIMEOUT_MS).
ALTER TABLE kasp_jobs ADD COLUMN timeout_ms INTEGER;

-- name: schema_2_result
-- Schema 2: the JSON text of the last succeeded attempt's result.
ALTER TABLE kasp_jobs ADD COLUMN result TEXT;

-- name: schema_2_claim_index
-- Schema 2: the claim order, priority DESC, ready_at, created_seq: a claim reads the first ready rows of it.
CREATE INDEX kasp_jobs_claim ON kasp_jobs (state, priority DESC, ready_at_ms, created_seq);

-- name: schema_2_finished_index
-- Schema 2: finished jobs, oldest finished first: what retention evicts.
CREATE INDEX kasp_jobs_finished ON kasp_jobs (updated_at_ms) WHERE state IN ('done', 'failed', 'cancelled');

-- name: schema_3_jobs
-- Schema 3: kasp_jobs again, keyed by created_seq (the rowid: enqueue order needs no index of its own); id stays unique.
CREATE TABLE kasp_jobs_3 (
    id TEXT NOT NULL UNIQUE,
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
    created_seq INTEGER PRIMARY KEY,
    ready_at_ms INTEGER,
    priority INTEGER NOT NULL DEFAULT 0,
    timeout_ms INTEGER,
    result TEXT
);

-- name: schema_3_copy
-- Schema 3: every job row into the new table.
INSERT INTO kasp_jobs_3 (id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms,
                         updated_at_ms, next_attempt_at_ms, version, created_seq, ready_at_ms, priority,
                         timeout_ms, result)
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs;

-- name: schema_3_drop
-- Schema 3: the old table, with its five indexes.
DROP TABLE kasp_jobs;

-- name: schema_3_rename
-- Schema 3: the new table takes the old name.
ALTER TABLE kasp_jobs_3 RENAME TO kasp_jobs;

-- name: schema_3_claim_index
-- Schema 3: the claim order (priority DESC, ready_at, then the rowid created_seq) of queued jobs only: a job leaves it when it starts.
CREATE INDEX kasp_jobs_claim ON kasp_jobs (priority DESC, ready_at_ms) WHERE state = 'queued';

-- name: schema_3_queue_index
-- Schema 3: queued jobs by due time (delayed counts, the next due time), queued jobs only; state last, so those counts read the index alone.
CREATE INDEX kasp_jobs_queue ON kasp_jobs (ready_at_ms, state) WHERE state = 'queued';

-- name: schema_3_state_index
-- Schema 3: listings by state, in enqueue order (each entry ends with the rowid, created_seq).
CREATE INDEX kasp_jobs_state ON kasp_jobs (state);

-- name: schema_3_finished_index
-- Schema 3: finished jobs, oldest finished first: what retention evicts.
CREATE INDEX kasp_jobs_finished ON kasp_jobs (updated_at_ms) WHERE state IN ('done', 'failed', 'cancelled');

-- name: probe_write
-- A write that changes nothing but reaches the disk (the header page): tells whether the file takes writes.
PRAGMA user_version = 3;

-- name: log_head
-- The cached head of the log at open: last seq and retained event count.
SELECT coalesce(max(seq), 0), count(*) FROM kasp_events;

-- name: count_by_state
-- Jobs by state, at open (then kept in the writer's counters).
SELECT state, count(*) FROM kasp_jobs GROUP BY state;

-- name: jobs_by_ids
-- The rows of these jobs (a JSON array of ids).
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE id IN (SELECT value FROM json_each(?));

-- name: job_by_id
-- One job's row.
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE id = ?;

-- name: claimable
-- Up to ? ready jobs in claim order (one writer: nothing to skip).
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs INDEXED BY kasp_jobs_claim
WHERE state = 'queued' AND ready_at_ms <= ?
ORDER BY priority DESC, ready_at_ms, created_seq LIMIT ?;

-- name: running
-- Every running job: at open, all were cut off by the previous process.
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE state = 'running' ORDER BY created_seq;

-- name: evictable
-- Up to ? finished jobs, oldest finished first.
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs INDEXED BY kasp_jobs_finished
WHERE state IN ('done', 'failed', 'cancelled') ORDER BY updated_at_ms LIMIT ?;

-- name: count_delayed
-- Queued jobs not yet due at ? (they hold no QUEUE_SIZE place).
SELECT count(*) FROM kasp_jobs INDEXED BY kasp_jobs_queue WHERE state = 'queued' AND ready_at_ms > ?;

-- name: insert_event
-- Append one event (the driver repeats the row for several: sqlite.py's _insert).
-- OR ROLLBACK: a multi-row INSERT that may abort alone keeps a statement journal (measured: twice
-- the pwrite calls of a batch); the core decided every row, so a conflict here is a bug, and the
-- whole batch rolling back is what happens next anyway (the core retries it request by request).
INSERT OR ROLLBACK INTO kasp_events (seq, job_id, version, type, at_ms, from_state, to_state, attempt, data)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: insert_job
-- Write a new job's row (repeated as insert_event is; OR ROLLBACK for the same reason).
INSERT OR ROLLBACK INTO kasp_jobs (id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms,
                       updated_at_ms, next_attempt_at_ms, version, created_seq, ready_at_ms, priority,
                       timeout_ms, result)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: update_job
-- Write what an event after `enqueued` can change (an index is rewritten only for a column set here), by rowid.
UPDATE kasp_jobs SET state = ?, attempts = ?, budget_used = ?, last_error = ?, updated_at_ms = ?,
    next_attempt_at_ms = ?, version = ?, ready_at_ms = ?, result = ?
WHERE created_seq = ?;

-- name: delete_events_of
-- Delete every event of these jobs (a JSON array of ids): retention.
DELETE FROM kasp_events WHERE job_id IN (SELECT value FROM json_each(?));

-- name: delete_jobs
-- Delete these jobs' rows (a JSON array of ids): retention.
DELETE FROM kasp_jobs WHERE id IN (SELECT value FROM json_each(?));

-- name: next_due
-- When the earliest queued job is (or was) due.
SELECT min(ready_at_ms) FROM kasp_jobs INDEXED BY kasp_jobs_queue WHERE state = 'queued';

-- name: list_jobs
-- A page of jobs in enqueue order after a cursor.
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE created_seq > ? ORDER BY created_seq LIMIT ?;

-- name: list_jobs_in_state
-- A page of jobs in one state, in enqueue order after a cursor.
SELECT id, payload, max_retries, state, attempts, budget_used, last_error, created_at_ms, updated_at_ms,
       next_attempt_at_ms, version, created_seq, ready_at_ms, priority, timeout_ms, result
FROM kasp_jobs WHERE state = ? AND created_seq > ? ORDER BY created_seq LIMIT ?;

-- name: job_events
-- One job's events in order.
SELECT seq, job_id, version, type, at_ms, from_state, to_state, attempt, data
FROM kasp_events WHERE job_id = ? ORDER BY version;

-- name: events_after
-- Events after a seq, in seq order.
SELECT seq, job_id, version, type, at_ms, from_state, to_state, attempt, data
FROM kasp_events WHERE seq > ? ORDER BY seq LIMIT ?;

-- name: events_after_of_job
-- One job's events after a seq.
SELECT seq, job_id, version, type, at_ms, from_state, to_state, attempt, data
FROM kasp_events WHERE seq > ? AND job_id = ? ORDER BY seq LIMIT ?;

-- name: events_after_of_type
-- Events of one type after a seq.
SELECT seq, job_id, version, type, at_ms, from_state, to_state, attempt, data
FROM kasp_events WHERE seq > ? AND type = ? ORDER BY seq LIMIT ?;

-- name: events_after_of_job_and_type
-- One job's events of one type after a seq.
SELECT seq, job_id, version, type, at_ms, from_state, to_state, attempt, data
FROM kasp_events WHERE seq > ? AND job_id = ? AND type = ? ORDER BY seq LIMIT ?;

-- name: unfinished_ids
-- Ids of jobs still queued or running, in enqueue order.
SELECT id FROM kasp_jobs WHERE state IN ('queued', 'running') ORDER BY created_seq;
