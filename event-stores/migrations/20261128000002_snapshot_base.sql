-- Incremental snapshots: a delta snapshot names the full snapshot it was written against, by
-- version and by that snapshot's checksum (the u64 bit-cast to i64, as `checksum` is). Both NULL
-- for a full snapshot. Retention never deletes a snapshot that a kept delta names here
-- (src/postgres/snapshot_store.rs, src/postgres/snapshot_writes.rs).
ALTER TABLE snapshots
    ADD COLUMN base_version  BIGINT,
    ADD COLUMN base_checksum BIGINT,
    ADD CONSTRAINT snapshots_base_check CHECK ((base_version IS NULL) = (base_checksum IS NULL));
