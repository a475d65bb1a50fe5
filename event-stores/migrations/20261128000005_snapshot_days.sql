-- Per-day snapshot statistics per aggregate type (SnapshotStore::add_snapshot_days): each
-- snapshot writer adds what it did, so a row is the sum over every process that wrote
-- snapshots of that type that UTC day. A row per type and day; kept for good.
CREATE TABLE snapshot_days (
    aggregate_type  TEXT   NOT NULL,
    day             DATE   NOT NULL,
    created         BIGINT NOT NULL DEFAULT 0 CHECK (created >= 0),
    deleted         BIGINT NOT NULL DEFAULT 0 CHECK (deleted >= 0),
    archived        BIGINT NOT NULL DEFAULT 0 CHECK (archived >= 0),
    bytes           BIGINT NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    creation_micros BIGINT NOT NULL DEFAULT 0 CHECK (creation_micros >= 0),
    CONSTRAINT snapshot_days_pkey PRIMARY KEY (aggregate_type, day)
);
