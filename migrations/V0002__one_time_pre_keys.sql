-- One-time prekeys: EC keys (unsigned) and Kyber keys (signed by the identity key).
-- A fetch deletes the row it hands out, so a key can never be handed out twice.

CREATE TABLE one_time_pre_keys (
    aci        UUID NOT NULL,
    device_id  SMALLINT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('ec', 'kem')),
    key_id     INTEGER NOT NULL CHECK (key_id >= 0),
    public_key BYTEA NOT NULL,
    -- Kyber one-time keys carry a signature; EC one-time keys do not
    signature  BYTEA,
    PRIMARY KEY (aci, device_id, kind, key_id),
    FOREIGN KEY (aci, device_id) REFERENCES devices (aci, device_id) ON DELETE CASCADE
);
