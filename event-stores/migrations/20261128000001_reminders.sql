-- Durable reminders: a named wake-up per stream, written in the same transaction as the events of
-- the command that scheduled, replaced, cancelled or fired it (src/postgres/reminders.rs).
--
-- `name` sorts byte by byte (COLLATE "C"), as the in-memory store does, so the primary key also
-- serves "the reminders of a stream, by name".
CREATE TABLE reminders (
    aggregate_type TEXT        NOT NULL,
    aggregate_id   TEXT        NOT NULL,
    name           TEXT        COLLATE "C" NOT NULL,
    -- Fresh for every schedule of the name: a firing carries the id it fired under and changes
    -- nothing once the name was replaced.
    reminder_id    UUID        NOT NULL,
    -- The stream's shard when scheduled under a fence (0 otherwise).
    shard          INT         NOT NULL DEFAULT 0 CHECK (shard >= 0),
    due_at         TIMESTAMPTZ NOT NULL,
    period_ms      BIGINT      CHECK (period_ms > 0),
    payload        BYTEA       NOT NULL,
    state          TEXT        NOT NULL DEFAULT 'scheduled'
                               CHECK (state IN ('scheduled', 'rejected')),
    last_error     TEXT,
    last_fired_at  TIMESTAMPTZ,
    CONSTRAINT reminders_pkey PRIMARY KEY (aggregate_type, aggregate_id, name)
);

-- The scheduler of a node: the due reminders of the shards it owns, earliest first. Read once per
-- shard (a LATERAL join over the shards, each an ordered range scan stopping at the limit), so a
-- node reads at most `limit` entries per shard whatever the backlog.
CREATE INDEX reminders_shard_due_idx ON reminders (shard, due_at) WHERE state = 'scheduled';

-- Every shard at once (a single node, or an operator's view): one ordered range scan stopping at
-- the limit. Without it that query reads every due entry of the index above and sorts them.
CREATE INDEX reminders_due_idx ON reminders (due_at) WHERE state = 'scheduled';
