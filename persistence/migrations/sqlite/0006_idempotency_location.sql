-- A replayed 201 carries the Location of the first answer.
ALTER TABLE idempotency_keys ADD COLUMN location TEXT;
