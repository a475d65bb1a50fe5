-- Cluster membership: one row per node process (a fresh node_id per start), alive while its
-- heartbeat, written with the database clock, is younger than the cluster's TTL. The shard
-- ownership rows the members claim live in `shard_owners` (created by the event-stores
-- migrations, because fenced appends check them).
CREATE TABLE cluster_members (
    node_id      UUID        PRIMARY KEY,
    address      TEXT        NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    left_at      TIMESTAMPTZ
);

-- Settings every node must agree on (the shard count).
CREATE TABLE cluster_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
