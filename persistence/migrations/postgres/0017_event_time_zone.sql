-- Messages people can read (issue 12, item 5). Each event's IANA time zone, in which its
-- messages show the start; events created before it are in Vietnam's.
ALTER TABLE events ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'Asia/Ho_Chi_Minh';

-- The language (`vi` or `en`) an account's messages are written in.
ALTER TABLE users ADD COLUMN language TEXT NOT NULL DEFAULT 'vi';

-- Notifications service: what its messages say about an order (the event's name, venue,
-- start and time zone, the ticket types' names, the buyer's language), as JSON, kept from the
-- order's OrderCreated, since the later events carry only ids.
CREATE TABLE notification_orders (
    order_id TEXT NOT NULL PRIMARY KEY,
    about    TEXT NOT NULL
);
