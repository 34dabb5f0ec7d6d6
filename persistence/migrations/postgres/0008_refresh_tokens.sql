-- Rotating refresh tokens (stored hashed) grouped in families, and revoked access tokens.
CREATE TABLE refresh_tokens (
    token_hash BYTEA   NOT NULL PRIMARY KEY,
    family     TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

CREATE TABLE revoked_access_tokens (
    jti        TEXT   NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX revoked_access_tokens_revoked_at ON revoked_access_tokens (revoked_at);
