-- The codings composite index rows are stored under. A composite row's parameter key carries its
-- first (token) component with its system (`code-value-quantity`, system, code); a search that
-- names the code without a system looks up here which systems to look under, instead of every
-- row being stored a second time without its system. Entries are never removed: one whose rows
-- are gone leads to no row. Rows stored before this table existed also have the key without a
-- system, which searches still look under until `fhirvault reindex` rewrites them.
CREATE TABLE composite_codes (
    resource_type TEXT NOT NULL, param TEXT NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL,
    CONSTRAINT composite_codes_key PRIMARY KEY (resource_type, param, code, system)
);
