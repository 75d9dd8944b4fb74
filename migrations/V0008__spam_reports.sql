-- Spam reports that counted (PROTOCOL.md 17): the reported message named a sender and was
-- still reportable. For operators (`sealpost reports list`); nothing acts on them. No
-- foreign keys: a report outlives the accounts it names.
CREATE TABLE spam_reports (
    id          BIGSERIAL PRIMARY KEY,
    reporter    UUID NOT NULL,
    source      UUID NOT NULL,
    guid        UUID NOT NULL,
    token       BYTEA CHECK (octet_length(token) BETWEEN 1 AND 1024),
    reported_ms BIGINT NOT NULL
);

CREATE INDEX spam_reports_by_time ON spam_reports (reported_ms);
