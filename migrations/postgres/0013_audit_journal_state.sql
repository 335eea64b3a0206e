-- Where the drain of the read journal got to: the last segment it wrote into the chains and how
-- many bytes of whole frames it read from it. Each segment names the segment written before it
-- and that one's length in its first frame, so a segment deleted, or cut short, before it was
-- drained shows as a segment that does not continue from here (src/audit/journal.rs).
CREATE TABLE audit_journal_state (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    last_segment TEXT NOT NULL,
    last_bytes BIGINT NOT NULL
);
