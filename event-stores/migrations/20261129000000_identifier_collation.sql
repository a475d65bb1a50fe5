-- Stream identifiers compare byte by byte (COLLATE "C"), whatever the database's default
-- collation: `stream_ids` pages in the same order as the in-memory store on every database,
-- and the primary keys compare identifiers with memcmp instead of a locale's collation, which
-- is also the cheaper compare. Every table that holds them changes together, so joins between
-- them compare like with like. The column type stays TEXT, so no table is rewritten, but every
-- index on these columns is rebuilt, under an exclusive lock of its table: on a large `events`
-- table, apply it while no node runs (it blocks every read and append until it ends).
ALTER TABLE events
    ALTER COLUMN aggregate_type TYPE TEXT COLLATE "C",
    ALTER COLUMN aggregate_id TYPE TEXT COLLATE "C";
ALTER TABLE snapshots
    ALTER COLUMN aggregate_type TYPE TEXT COLLATE "C",
    ALTER COLUMN aggregate_id TYPE TEXT COLLATE "C";
ALTER TABLE snapshot_archive
    ALTER COLUMN aggregate_type TYPE TEXT COLLATE "C",
    ALTER COLUMN aggregate_id TYPE TEXT COLLATE "C";
ALTER TABLE reminders
    ALTER COLUMN aggregate_type TYPE TEXT COLLATE "C",
    ALTER COLUMN aggregate_id TYPE TEXT COLLATE "C";
ALTER TABLE snapshot_schedules
    ALTER COLUMN aggregate_type TYPE TEXT COLLATE "C",
    ALTER COLUMN aggregate_id TYPE TEXT COLLATE "C";
ALTER TABLE snapshot_days
    ALTER COLUMN aggregate_type TYPE TEXT COLLATE "C";
