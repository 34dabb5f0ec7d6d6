-- One row per Idempotency-Key: in progress while status is NULL, then the stored response.
CREATE TABLE idempotency_keys (
    scope           TEXT     NOT NULL,
    idempotency_key TEXT     NOT NULL,
    request_hash    BYTEA    NOT NULL,
    created_at      BIGINT   NOT NULL,
    status          BIGINT,
    content_type    TEXT,
    body            BYTEA,
    PRIMARY KEY (scope, idempotency_key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
