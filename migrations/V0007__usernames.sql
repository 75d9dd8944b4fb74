-- Usernames (PROTOCOL.md 14.2, 14.4): one row per hash, unique across every account and
-- pod, and one row per account for its reservation and link. Forward only.
--
-- The link lives in a table of its own rather than on `accounts`: the account store and its
-- cache never read it, and a username operation locks only this row, not the account's.

CREATE TABLE usernames (
    hash              BYTEA PRIMARY KEY CHECK (octet_length(hash) = 32),
    aci               UUID NOT NULL REFERENCES accounts (aci) ON DELETE CASCADE,
    -- the account's username; otherwise a reservation, a hold, or a lapsed one of them
    confirmed         BOOLEAN NOT NULL DEFAULT FALSE,
    reserved_until_ms BIGINT,
    held_until_ms     BIGINT,
    -- kept across a re-registration (PROTOCOL.md 18): confirming it keeps the link handle
    reclaimable       BOOLEAN NOT NULL DEFAULT FALSE,
    CHECK (NOT confirmed OR (reserved_until_ms IS NULL AND held_until_ms IS NULL))
);

-- At most one username per account.
CREATE UNIQUE INDEX usernames_confirmed_aci ON usernames (aci) WHERE confirmed;
CREATE INDEX usernames_aci ON usernames (aci);

CREATE TABLE account_usernames (
    aci                UUID PRIMARY KEY REFERENCES accounts (aci) ON DELETE CASCADE,
    -- the hash the account last reserved (its row may have lapsed or gone to another)
    reserved_hash      BYTEA CHECK (octet_length(reserved_hash) = 32),
    link_handle        UUID UNIQUE,
    encrypted_username BYTEA CHECK (octet_length(encrypted_username) BETWEEN 1 AND 128),
    CHECK ((link_handle IS NULL) = (encrypted_username IS NULL))
);
