-- The checkout saga's services. Each table belongs to one service (orders, payments, tickets,
-- notifications); a service reads and writes only its own tables and hears about the others
-- through the bus. In one process they share a database; run apart, each has its own.

-- Orders service.
CREATE TABLE orders (
    id              TEXT   NOT NULL PRIMARY KEY,
    user_id         TEXT   NOT NULL,
    email           TEXT   NOT NULL,
    event_id        TEXT   NOT NULL,
    hold_id         TEXT   NOT NULL UNIQUE,
    status          TEXT   NOT NULL,
    amount          BIGINT NOT NULL,
    currency        TEXT   NOT NULL,
    items           TEXT   NOT NULL,
    hold_expires_at BIGINT NOT NULL,
    payment_url     TEXT,
    note            TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX orders_user ON orders (user_id, created_at);
CREATE INDEX orders_status ON orders (status, hold_expires_at);

-- Payments service.
CREATE TABLE payments (
    order_id        TEXT   NOT NULL PRIMARY KEY,
    amount          BIGINT NOT NULL,
    currency        TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    payment_url     TEXT   NOT NULL,
    expires_at      BIGINT NOT NULL,
    transaction_no  TEXT,
    bank_code       TEXT,
    response_code   TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX payments_status ON payments (status, expires_at);

-- Tickets service: one row per seat; (order, type, seat) makes issuing idempotent.
CREATE TABLE tickets (
    id          TEXT   NOT NULL PRIMARY KEY,
    order_id    TEXT   NOT NULL,
    user_id     TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    ticket_type TEXT   NOT NULL,
    seat        BIGINT NOT NULL,
    code        TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    admitted_at BIGINT,
    created_at  BIGINT NOT NULL,
    UNIQUE (order_id, ticket_type, seat)
);

-- Notifications service: messages to send, with their retry schedule.
CREATE TABLE notifications (
    id              TEXT   NOT NULL PRIMARY KEY,
    order_id        TEXT   NOT NULL,
    channel         TEXT   NOT NULL,
    recipient       TEXT   NOT NULL,
    subject         TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    attachments     BYTEA,
    status          TEXT   NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);

-- Every producer's transactional outbox; a relay publishes it to the bus in order.
CREATE TABLE outbox (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT   NOT NULL UNIQUE,
    topic        TEXT   NOT NULL,
    record_key   TEXT   NOT NULL,
    payload      BYTEA   NOT NULL,
    created_at   BIGINT NOT NULL,
    published_at BIGINT
);
CREATE INDEX outbox_unpublished ON outbox (published_at, seq);

-- Every consumer's processed event ids, written with its side effect.
CREATE TABLE processed_events (
    consumer     TEXT   NOT NULL,
    event_id     TEXT   NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
