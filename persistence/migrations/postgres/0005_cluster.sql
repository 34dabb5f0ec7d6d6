-- Cluster membership and shard ownership. PostgreSQL decides ownership: a node claims a shard
-- by compare-and-set on its epoch, and every journal write of a clustered node is fenced by it.
CREATE TABLE cluster_meta (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE cluster_nodes (
    node_id      TEXT   NOT NULL PRIMARY KEY,
    addr         TEXT   NOT NULL,
    http_addr    TEXT   NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    started_at   BIGINT NOT NULL
);

CREATE TABLE cluster_shards (
    shard BIGINT NOT NULL PRIMARY KEY,
    owner TEXT,
    epoch BIGINT NOT NULL
);
