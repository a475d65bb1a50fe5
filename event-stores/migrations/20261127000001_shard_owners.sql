-- Shard ownership for clusters: one row per shard, its owning node and an epoch that grows on
-- every change of owner. Fenced appends check (owner, epoch) against this row under a share lock
-- (src/postgres/event_store.rs); the cluster crate claims and releases rows. Unused (and empty)
-- on a single node.
CREATE TABLE shard_owners (
    shard      INT         PRIMARY KEY CHECK (shard >= 0),
    owner      UUID,
    epoch      BIGINT      NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
