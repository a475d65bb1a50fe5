-- Events and snapshots of the event-stores crate. One migration set for both tables, so the
-- event store and the snapshot store can each run it, against one database or two.

CREATE TABLE events (
    aggregate_type TEXT        NOT NULL,
    aggregate_id   TEXT        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version > 0),
    event_id       UUID        NOT NULL,
    event_type     TEXT        NOT NULL,
    schema_version INT         NOT NULL,
    payload        BYTEA       NOT NULL,
    correlation_id UUID,
    causation_id   UUID,
    recorded_at    TIMESTAMPTZ NOT NULL,
    -- Writing transaction. Every append is one statement in its own transaction.
    tx             XID8        NOT NULL DEFAULT pg_current_xact_id(),
    -- Store-wide position: (tx << 16) + index of the event within its append. Ordering by
    -- transaction id (not by a sequence) is what lets read_all hand out only positions below
    -- the oldest running transaction and so never skip an event that commits late; see
    -- src/postgres/event_store.rs.
    position       BIGINT      NOT NULL,
    -- "Events of stream S after version V" is a range scan on this key.
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_position_key UNIQUE (position)
);

CREATE TABLE snapshots (
    aggregate_type       TEXT        NOT NULL,
    aggregate_id         TEXT        NOT NULL,
    version              BIGINT      NOT NULL CHECK (version > 0),
    last_event_id        UUID        NOT NULL,
    state_schema_version INT         NOT NULL,
    codec                TEXT        NOT NULL,
    compression          TEXT        NOT NULL,
    -- The u64 checksum, bit-cast to i64.
    checksum             BIGINT      NOT NULL,
    uncompressed_size    BIGINT      NOT NULL,
    stored_size          BIGINT      NOT NULL,
    taken_at             TIMESTAMPTZ NOT NULL,
    bytes                BYTEA       NOT NULL,
    -- "Newest snapshot of S at or before version V" is a backward scan on this key.
    CONSTRAINT snapshots_pkey PRIMARY KEY (aggregate_type, aggregate_id, version)
);

CREATE INDEX snapshots_taken_at_idx ON snapshots (aggregate_type, aggregate_id, taken_at);
