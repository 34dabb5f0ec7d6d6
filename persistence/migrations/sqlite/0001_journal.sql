-- The event-sourced inventory: one journal per event, and its latest snapshot.
CREATE TABLE journal (
    event_id   TEXT    NOT NULL,
    seq        BIGINT  NOT NULL,
    epoch      BIGINT  NOT NULL,
    payload    BLOB    NOT NULL,
    written_at BIGINT  NOT NULL,
    PRIMARY KEY (event_id, seq)
) WITHOUT ROWID;

CREATE TABLE snapshots (
    event_id TEXT   NOT NULL PRIMARY KEY,
    seq      BIGINT NOT NULL,
    epoch    BIGINT NOT NULL,
    state    BLOB   NOT NULL,
    taken_at BIGINT NOT NULL
) WITHOUT ROWID;
