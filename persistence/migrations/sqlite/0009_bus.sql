-- The durable event bus (holdfast-bus `SqlBus`): every published record of every topic in one
-- log ordered by `seq`, and how far each consumer group has processed each topic.
-- AUTOINCREMENT: a seq is never reused, even after the newest records are deleted.
CREATE TABLE bus_records (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    published_at BIGINT  NOT NULL
);

CREATE INDEX bus_records_by_topic ON bus_records (topic, seq);

-- `committed_seq`: the group has processed every record of the topic up to and including it.
CREATE TABLE bus_offsets (
    group_name    TEXT   NOT NULL,
    topic         TEXT   NOT NULL,
    committed_seq BIGINT NOT NULL,
    committed_at  BIGINT NOT NULL,
    PRIMARY KEY (group_name, topic)
) WITHOUT ROWID;
