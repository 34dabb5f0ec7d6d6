-- Saga messages a consumer could not handle (a permanent error, or a transient one that
-- outlasted its retries): kept here so the consumer moves on and commits its offset, until an
-- admin retries or discards them. One row per (consumer group, record).
CREATE TABLE saga_parked (
    id          TEXT   NOT NULL PRIMARY KEY,
    group_name  TEXT   NOT NULL,
    topic       TEXT   NOT NULL,
    record_key  TEXT   NOT NULL,
    -- The saga event id, or the record's offset when it did not decode.
    event_id    TEXT   NOT NULL,
    order_id    TEXT,
    payload     BLOB  NOT NULL,
    error       TEXT   NOT NULL,
    attempts    BIGINT NOT NULL,
    parked_at   BIGINT NOT NULL,
    UNIQUE (group_name, event_id)
);
CREATE INDEX saga_parked_by_time ON saga_parked (parked_at);
