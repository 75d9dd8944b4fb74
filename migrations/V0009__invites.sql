-- Invite tokens for `registration = "token"`: only a SHA-256 of each token is kept; a
-- registration takes one use (`used < uses`) in one UPDATE.
CREATE TABLE invites (
    id         BIGSERIAL PRIMARY KEY,
    token_hash BYTEA NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    uses       INTEGER NOT NULL CHECK (uses > 0),
    used       INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
    expires_ms BIGINT,
    created_ms BIGINT NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE
);
