-- The writing transaction is already in every position (position >> 16), and nothing reads this
-- column: dropping it saves 8 bytes and a second pg_current_xact_id() call per event
-- (benches/PROFILE.md, section 4). A metadata-only change: no table rewrite.
ALTER TABLE events DROP COLUMN tx;
