-- The read journal segments that may hold acknowledged reads the drain has not written yet: the
-- newest the journal opened (recorded, with its first frame already durable, before any read in
-- it is acknowledged) and the one it prepared to open next (its empty file created first). After a
-- crash, a segment named here that is neither on disk nor drained was deleted with the reads it
-- recorded; no later segment names it, so the chain of segments alone cannot show it
-- (src/audit/journal.rs).
CREATE TABLE audit_journal_opened (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    segment TEXT NOT NULL,
    next TEXT NOT NULL
);
