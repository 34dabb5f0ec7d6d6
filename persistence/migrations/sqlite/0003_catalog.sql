CREATE TABLE events (
    id           TEXT   NOT NULL PRIMARY KEY,
    organizer_id TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    venue        TEXT   NOT NULL,
    starts_at    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE INDEX events_starts_at ON events (starts_at, id);
CREATE INDEX events_organizer ON events (organizer_id);

CREATE TABLE ticket_types (
    event_id       TEXT   NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    -- Order in which the organizer listed the types.
    position       BIGINT NOT NULL,
    code           TEXT   NOT NULL,
    name           TEXT   NOT NULL,
    price          BIGINT NOT NULL CHECK (price >= 0),
    currency       TEXT   NOT NULL,
    capacity       BIGINT NOT NULL CHECK (capacity >= 0),
    per_user_limit BIGINT,
    PRIMARY KEY (event_id, code),
    UNIQUE (event_id, position)
);
