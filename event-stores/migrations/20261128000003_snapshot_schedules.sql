-- Snapshot schedules (aggregate-actors' scheduler): one row per named schedule, shared by every
-- node. A runner claims an occurrence by moving next_run_at on with a compare-and-set, so each
-- occurrence runs once across the cluster.
CREATE TABLE snapshot_schedules (
    name           TEXT        PRIMARY KEY,
    aggregate_type TEXT        NOT NULL,
    -- NULL: every aggregate of the type.
    aggregate_id   TEXT,
    cron           TEXT        NOT NULL,
    next_run_at    TIMESTAMPTZ NOT NULL,
    last_run_at    TIMESTAMPTZ,
    last_outcome   TEXT,
    runs           BIGINT      NOT NULL DEFAULT 0,
    runs_on_time   BIGINT      NOT NULL DEFAULT 0
);

CREATE INDEX snapshot_schedules_due_idx ON snapshot_schedules (next_run_at);
