-- Where a device's wake-ups go (PROTOCOL.md 11.1, 11.2): at most one registration per
-- device, of one kind, gone with the device. Forward only.

CREATE TABLE push_registrations (
    aci        UUID NOT NULL,
    device_id  SMALLINT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('fcm', 'apns', 'webpush')),
    -- FCM registration id or APNs device token
    token      TEXT,
    -- WebPush: the endpoint, the subscription's keys, its activation
    endpoint   TEXT,
    public_key BYTEA CHECK (octet_length(public_key) = 65),
    auth       BYTEA CHECK (octet_length(auth) = 16),
    activation UUID,
    active     BOOLEAN NOT NULL DEFAULT FALSE,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (aci, device_id),
    FOREIGN KEY (aci, device_id) REFERENCES devices (aci, device_id) ON DELETE CASCADE,
    CHECK ((kind = 'webpush') = (endpoint IS NOT NULL AND public_key IS NOT NULL
                                 AND auth IS NOT NULL AND activation IS NOT NULL)),
    CHECK ((kind = 'webpush') = (token IS NULL))
);
