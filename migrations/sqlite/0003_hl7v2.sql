-- HL7 v2 messages that were stored: one row per (sending application, sending facility, MSH-10),
-- written in the same transaction as the resources the message created, so a resent message is
-- recognised across restarts and gets the same ACK again.
CREATE TABLE hl7_messages (
    message_key   TEXT    NOT NULL PRIMARY KEY, -- HMAC of sending application | facility | MSH-10
    content_hash  TEXT    NOT NULL,             -- HMAC of the canonical message text
    received_at   INTEGER NOT NULL,             -- microseconds since the Unix epoch, UTC
    ack           BLOB    NOT NULL,             -- sealed ACK sent for it (answered again on a resend)
    provenance_id TEXT    NOT NULL              -- the Provenance that records what the message created
) WITHOUT ROWID;

-- Messages that could not be parsed, mapped or stored, kept sealed for a replay after a fix.
-- A resend of the same bytes updates its row (attempts, last_seen) instead of adding one.
CREATE TABLE hl7_dead_letters (
    id            TEXT    NOT NULL PRIMARY KEY, -- UUID v7: sorts by first arrival
    content_hash  TEXT    NOT NULL UNIQUE,      -- HMAC of the raw bytes
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    attempts      INTEGER NOT NULL,
    error_code    INTEGER NOT NULL,             -- HL7 table 0357
    reason        TEXT    NOT NULL,             -- what was wrong; never contains message content
    key_id        INTEGER NOT NULL,
    message       BLOB    NOT NULL,             -- sealed raw bytes as received
    resolved_at   INTEGER                       -- set when a replay stored the message
);
CREATE INDEX hl7_dead_letters_open ON hl7_dead_letters (resolved_at, id);
