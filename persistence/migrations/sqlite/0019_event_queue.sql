-- The waiting room (issue 11, item 3). An event's queue settings as JSON
-- (`{"admit_per_minute", "active_max", "admission_ttl_secs"}`); NULL: sold without a queue.
-- The queue itself (who waits, who is admitted) lives in the event's actor: journaled and
-- snapshotted with its stock.
ALTER TABLE events ADD COLUMN queue TEXT;
