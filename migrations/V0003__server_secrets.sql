-- Secrets every pod must share and that must not live next to the data they protect:
-- the key of the keyed hash that stands for client addresses in Redis's rate-limit buckets.
-- Made at random by the first pod that needs one; never changed afterwards.

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL CHECK (length(value) = 32)
);
