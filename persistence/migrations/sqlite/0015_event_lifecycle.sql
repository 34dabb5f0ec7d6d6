-- Event lifecycle and catalog: categories, a description, the sale window, cancellation, and
-- the prices ticket types had before a change (a change applies to holds placed after it).

CREATE TABLE categories (
    slug     TEXT   NOT NULL PRIMARY KEY,
    name     TEXT   NOT NULL,
    position BIGINT NOT NULL
);
INSERT INTO categories (slug, name, position) VALUES
    ('music', 'Music', 0),
    ('sports', 'Sports', 1),
    ('theatre', 'Theatre', 2),
    ('comedy', 'Comedy', 3),
    ('conference', 'Conference', 4),
    ('festival', 'Festival', 5),
    ('family', 'Family', 6),
    ('other', 'Other', 7);

ALTER TABLE events ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE events ADD COLUMN category TEXT REFERENCES categories (slug);
-- Milliseconds since the Unix epoch; NULL leaves that end of the sale open.
ALTER TABLE events ADD COLUMN sale_starts_at BIGINT;
ALTER TABLE events ADD COLUMN sale_ends_at BIGINT;
ALTER TABLE events ADD COLUMN cancelled_at BIGINT;
ALTER TABLE events ADD COLUMN cancel_reason TEXT;
-- Name and venue lower-cased (Unicode, by the server) for `q`: the backends' own lower() differ
-- (SQLite folds ASCII only). Rows from before are folded here as well as the backend can.
ALTER TABLE events ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
UPDATE events SET search_text = lower(name) || char(10) || lower(venue);
CREATE INDEX events_category ON events (category, starts_at, id);
CREATE INDEX events_organizer_starts ON events (organizer_id, starts_at, id);

-- One row per price change: a hold placed before `changed_at` pays `old_price`.
CREATE TABLE ticket_type_price_changes (
    event_id   TEXT   NOT NULL,
    code       TEXT   NOT NULL,
    changed_at BIGINT NOT NULL,
    old_price  BIGINT NOT NULL,
    PRIMARY KEY (event_id, code, changed_at),
    FOREIGN KEY (event_id, code) REFERENCES ticket_types (event_id, code) ON DELETE CASCADE
);

-- The organizer's view of an event's orders and attendees.
CREATE INDEX orders_event ON orders (event_id, created_at, id);
CREATE INDEX tickets_event ON tickets (event_id, created_at, id);
