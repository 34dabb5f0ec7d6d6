-- The durable event bus (holdfast-bus `SqlBus`): every published record of every topic in one
-- log ordered by `seq`, and how far each consumer group has processed each topic. Publishers of
-- a topic are serialised by an advisory lock, so within a topic seqs commit in order and a
-- reader never skips a seq that commits after a higher one.
CREATE TABLE bus_records (
    seq          BIGSERIAL PRIMARY KEY,
    topic        TEXT   NOT NULL,
    key          TEXT   NOT NULL,
    payload      BYTEA  NOT NULL,
    published_at BIGINT NOT NULL
);

CREATE INDEX bus_records_by_topic ON bus_records (topic, seq);

-- `committed_seq`: the group has processed every record of the topic up to and including it.
CREATE TABLE bus_offsets (
    group_name    TEXT   NOT NULL,
    topic         TEXT   NOT NULL,
    committed_seq BIGINT NOT NULL,
    committed_at  BIGINT NOT NULL,
    PRIMARY KEY (group_name, topic)
);
