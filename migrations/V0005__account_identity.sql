-- Account identity and device shapes (PROTOCOL.md 16.1, 16.2). Forward only.

-- 16 random bytes per account, made at registration and kept: the salt of zk auth
-- credentials for accounts without a phone number. Accounts made before this migration get
-- theirs here: the 16 bytes of a random (v4) UUID, from Postgres's own CSPRNG (122 random
-- bits; pgcrypto is not assumed).
ALTER TABLE accounts ADD COLUMN auth_credential_salt BYTEA;
UPDATE accounts SET auth_credential_salt = uuid_send(gen_random_uuid())
    WHERE auth_credential_salt IS NULL;
ALTER TABLE accounts ALTER COLUMN auth_credential_salt SET NOT NULL;
ALTER TABLE accounts ADD CONSTRAINT accounts_auth_credential_salt_length
    CHECK (octet_length(auth_credential_salt) = 16);

-- The creation time sealed to the account's identity key when the device was made (HPKE,
-- 57 bytes). Devices made before this migration have none: the server seals theirs the
-- first time it lists them and keeps it (src/service/devices.rs).
ALTER TABLE devices ADD COLUMN created_at_ciphertext BYTEA
    CHECK (octet_length(created_at_ciphertext) = 57);
