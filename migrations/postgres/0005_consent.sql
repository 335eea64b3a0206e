-- The rules of active patient-privacy Consents (src/auth/consent/), one row per provision and
-- (actor, purpose, class, data) combination, maintained like search index rows: replaced in the
-- transaction of every Consent version, removed with it. Queries probe them by patient.
-- '*' in actor, purpose or class means "any"; data_type/data_id are '' for "all data".
CREATE TABLE consent_rules (
    resource_type TEXT NOT NULL, -- always 'Consent' (the index tables' owner columns)
    patient_id TEXT NOT NULL,
    recorded BIGINT NOT NULL,     -- Consent.dateTime, µs since the Unix epoch: the newest wins
    depth BIGINT NOT NULL,        -- provision nesting: the most specific wins
    permit BIGINT NOT NULL,       -- 1 permit, 0 deny
    actor TEXT NOT NULL,         -- '*', 'Organization/<id>' or 'role:<name>'
    purpose TEXT NOT NULL,       -- '*' or a v3 PurposeOfUse code
    class TEXT NOT NULL,         -- '*' or a resource type
    data_type TEXT NOT NULL, data_id TEXT NOT NULL,
    starts BIGINT NOT NULL, ends BIGINT NOT NULL, -- [starts, ends), µs
    id TEXT NOT NULL,            -- the Consent
    -- Probes seek on (patient_id, permit) and filter that patient's few rows: with actor, purpose
    -- and class next in the key, SQLite would expand their IN lists into a seek per combination.
    CONSTRAINT consent_rules_key PRIMARY KEY (patient_id, permit, recorded, depth, actor, purpose, class, data_type, data_id, starts, ends, id)
);
CREATE INDEX consent_rules_owner ON consent_rules (resource_type, id);
