-- Staff belong to an organizer: they check tickets in at that organizer's events only.
-- NULL for every other role.
ALTER TABLE users ADD COLUMN organizer_id TEXT;
CREATE INDEX users_organizer ON users (organizer_id);
