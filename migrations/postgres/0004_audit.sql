-- Hash chains over AuditEvents. The AuditEvents themselves are ordinary resources (sealed in
-- resource_versions, indexed like any other); a link ties one of them into a chain:
-- hash = SHA-256(previous hash | chain | seq | id | the AuditEvent's sealed plaintext), see
-- src/audit/chain.rs. Several chains let concurrent writers append without waiting for one lock.
CREATE TABLE audit_chain (
    chain BIGINT NOT NULL,
    seq   BIGINT NOT NULL,                 -- 1, 2, … per chain, without gaps
    id    TEXT   NOT NULL,                 -- the AuditEvent's id (its version 1 is what was hashed)
    hash  BYTEA  NOT NULL,                 -- 32 bytes
    PRIMARY KEY (chain, seq),
    CONSTRAINT audit_chain_id UNIQUE (id)
);

-- The last link of each chain, and where the chain starts after pruning (the anchor: the last
-- pruned link; seq 0 and the zero hash before any pruning).
CREATE TABLE audit_chain_heads (
    chain       BIGINT NOT NULL PRIMARY KEY,
    seq         BIGINT NOT NULL,
    hash        BYTEA  NOT NULL,
    anchor_seq  BIGINT NOT NULL DEFAULT 0,
    anchor_hash BYTEA  NOT NULL
);
