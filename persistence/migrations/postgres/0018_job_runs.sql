-- Scheduler: one row per job and due time, claimed by the scheduler that runs it, in the same
-- transaction as what the run queues (its notifications). The primary key makes a due time run
-- once across the cluster: a second scheduler's insert finds the row and does nothing.
CREATE TABLE job_runs (
    job        TEXT   NOT NULL,
    due_key    TEXT   NOT NULL,
    holder     TEXT   NOT NULL,
    ran_at     BIGINT NOT NULL,
    PRIMARY KEY (job, due_key)
);
CREATE INDEX job_runs_ran_at ON job_runs (ran_at);

-- Scheduler: what the bus told it of each order, for the reminders and the sales summaries:
-- the event, the buyer's contact and language (OrderCreated, TicketsIssued), the seats still
-- valid by type, as JSON `[["GA", 2], …]`, and their number (TicketsIssued, then
-- TicketsVoided's kept seats), when they were issued, the amount (OrderCreated) and when the
-- order was confirmed (OrderConfirmed).
CREATE TABLE scheduler_holdings (
    order_id   TEXT   NOT NULL PRIMARY KEY,
    event_id   TEXT   NOT NULL,
    email      TEXT,
    phone      TEXT,
    language   TEXT   NOT NULL DEFAULT 'vi',
    seats      TEXT   NOT NULL DEFAULT '[]',
    seat_count BIGINT NOT NULL DEFAULT 0,
    issued_at  BIGINT,
    amount     BIGINT NOT NULL DEFAULT 0,
    currency   TEXT,
    confirmed_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX scheduler_holdings_event ON scheduler_holdings (event_id);
