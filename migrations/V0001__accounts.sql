-- Accounts, their devices and the signed keys registration stores.
-- Forward only: a later change adds a new file, never edits this one.

CREATE TABLE accounts (
    aci                              UUID PRIMARY KEY,
    identity_key                     BYTEA NOT NULL,
    unidentified_access_key          BYTEA CHECK (octet_length(unidentified_access_key) = 16),
    unrestricted_unidentified_access BOOLEAN NOT NULL DEFAULT FALSE,
    created_at                       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE devices (
    aci              UUID NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    device_id        SMALLINT NOT NULL CHECK (device_id BETWEEN 1 AND 127),
    -- argon2id PHC string; never the password itself
    password_hash    TEXT NOT NULL,
    registration_id  INTEGER NOT NULL CHECK (registration_id BETWEEN 1 AND 16383),
    name             BYTEA,
    fetches_messages BOOLEAN NOT NULL,
    capabilities     JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_ms       BIGINT NOT NULL,
    -- midnight UTC of the last day the device was seen: kept only to the day
    last_seen_day_ms BIGINT NOT NULL,
    PRIMARY KEY (aci, device_id)
);

-- The signed EC prekey and the Kyber last-resort key: one of each per device.
CREATE TABLE signed_pre_keys (
    aci        UUID NOT NULL,
    device_id  SMALLINT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('ec_signed', 'kem_last_resort')),
    key_id     INTEGER NOT NULL CHECK (key_id >= 0),
    public_key BYTEA NOT NULL,
    signature  BYTEA NOT NULL,
    PRIMARY KEY (aci, device_id, kind),
    FOREIGN KEY (aci, device_id) REFERENCES devices (aci, device_id) ON DELETE CASCADE
);
