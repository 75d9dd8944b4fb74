-- Versioned encrypted profiles (PROTOCOL.md 13): every version an account stored, each with
-- its own avatar object name, and the account's current version. Gone with the account by
-- its foreign key (its avatar objects are deleted by the service first). Forward only.

CREATE TABLE profile_versions (
    aci                  UUID NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    -- hex of the client's profile-key version: 64 characters
    version              TEXT NOT NULL CHECK (octet_length(version) = 64),
    -- zkgroup ProfileKeyCommitment, kept opaque after its length check
    commitment           BYTEA NOT NULL CHECK (octet_length(commitment) = 97),
    name                 BYTEA NOT NULL,
    about_emoji          BYTEA,
    about                BYTEA,
    payment_address      BYTEA,
    phone_number_sharing BYTEA,
    -- `profiles/<id>` in the object store, or none
    avatar               TEXT,
    PRIMARY KEY (aci, version)
);

CREATE TABLE profile_current (
    aci     UUID PRIMARY KEY REFERENCES accounts (aci) ON DELETE CASCADE,
    version TEXT NOT NULL,
    FOREIGN KEY (aci, version) REFERENCES profile_versions (aci, version) ON DELETE CASCADE
);
