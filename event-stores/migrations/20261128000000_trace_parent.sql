-- The W3C traceparent of the call that produced an event: trace id (16 bytes), parent span id
-- (8 bytes), flags (1 byte). NULL when the caller sent none. Adding a nullable column without a
-- default only changes the catalog: existing rows are not rewritten.
ALTER TABLE events ADD COLUMN IF NOT EXISTS trace_parent bytea;
