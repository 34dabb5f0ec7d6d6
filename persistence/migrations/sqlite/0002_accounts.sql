CREATE TABLE users (
    id            TEXT   NOT NULL PRIMARY KEY,
    email         TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    password_hash TEXT   NOT NULL,
    role          TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

-- Emails are unique regardless of case; lookups use the same expression.
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));
