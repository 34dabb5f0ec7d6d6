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
