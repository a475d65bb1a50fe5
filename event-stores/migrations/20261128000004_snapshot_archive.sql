-- Archived snapshots (PgSnapshotArchive): what retention moved out of `snapshots`, unchanged,
-- with when it was archived. Listed and restored per stream; time travel may read them.
CREATE TABLE snapshot_archive (
    aggregate_type       TEXT        NOT NULL,
    aggregate_id         TEXT        NOT NULL,
    version              BIGINT      NOT NULL CHECK (version > 0),
    last_event_id        UUID        NOT NULL,
    state_schema_version INT         NOT NULL,
    codec                TEXT        NOT NULL,
    compression          TEXT        NOT NULL,
    checksum             BIGINT      NOT NULL,
    uncompressed_size    BIGINT      NOT NULL,
    stored_size          BIGINT      NOT NULL,
    taken_at             TIMESTAMPTZ NOT NULL,
    bytes                BYTEA       NOT NULL,
    base_version         BIGINT,
    base_checksum        BIGINT,
    archived_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT snapshot_archive_pkey PRIMARY KEY (aggregate_type, aggregate_id, version)
);
