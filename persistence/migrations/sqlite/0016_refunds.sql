-- Refunds (issue 12, item 4). An event's refund policy, as JSON
-- (`{"until_hours_before_start", "fee_percent", "fee_fixed"}`); NULL: buyers cannot refund by
-- themselves.
ALTER TABLE events ADD COLUMN refund_policy TEXT;

-- Orders service: each refund of an order as the buyer sees it. `ticket_ids` (JSON array) are
-- the tickets it refunds; `status` is `processing` until the payments service reports
-- `refunded` or `failed`.
CREATE TABLE refunds (
    id           TEXT   NOT NULL PRIMARY KEY,
    order_id     TEXT   NOT NULL,
    amount       BIGINT NOT NULL CHECK (amount >= 0),
    fee          BIGINT NOT NULL CHECK (fee >= 0),
    currency     TEXT   NOT NULL,
    ticket_ids   TEXT   NOT NULL,
    reason       TEXT   NOT NULL,
    by_organizer BIGINT NOT NULL,
    status       TEXT   NOT NULL,
    note         TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX refunds_order ON refunds (order_id, created_at);

-- Payments service: the money of each refund going back through VNPAY's refund API, with its
-- retry schedule. `uncertain` = 1 when the last attempt's answer was lost (a timeout): the next
-- attempt asks `querydr` first, and VNPAY's `94` (this refund was requested before) counts as
-- taken.
CREATE TABLE payment_refunds (
    id              TEXT   NOT NULL PRIMARY KEY,
    order_id        TEXT   NOT NULL,
    amount          BIGINT NOT NULL CHECK (amount > 0),
    status          TEXT   NOT NULL,
    attempts        BIGINT NOT NULL,
    uncertain       BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    response_code   TEXT,
    message         TEXT,
    transaction_no  TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX payment_refunds_due ON payment_refunds (status, next_attempt_at);
CREATE INDEX payment_refunds_order ON payment_refunds (order_id);
