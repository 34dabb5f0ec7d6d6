-- Snapshots are large rows (the whole state of an event): SQLite keeps those best in a rowid
-- table, where the blob lives in overflow pages of its own and the key stays small.
CREATE TABLE snapshots_rowid (
    event_id TEXT   NOT NULL PRIMARY KEY,
    seq      BIGINT NOT NULL,
    epoch    BIGINT NOT NULL,
    state    BLOB   NOT NULL,
    taken_at BIGINT NOT NULL
);
INSERT INTO snapshots_rowid SELECT event_id, seq, epoch, state, taken_at FROM snapshots;
DROP TABLE snapshots;
ALTER TABLE snapshots_rowid RENAME TO snapshots;
