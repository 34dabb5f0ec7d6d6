-- A buyer's mobile number (E.164), for SMS notifications; optional.
ALTER TABLE users ADD COLUMN phone TEXT;
ALTER TABLE orders ADD COLUMN phone TEXT;
