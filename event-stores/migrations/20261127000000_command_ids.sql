-- The command that wrote each event. Event ids of command events are derived from the command
-- id, the stream and the event's index, so the unique event_id key already refuses a second copy
-- of a command; this column says which command an event belongs to (deduplication windows are
-- rebuilt from it on replay, and a duplicate's original events are found by it).
ALTER TABLE events ADD COLUMN command_id UUID;
