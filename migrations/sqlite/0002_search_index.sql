-- Search index rows of current versions, written in the same transaction as the version they
-- describe. PHI parameters never land here in plain text: they go to search_blind as keyed tokens.
--
-- Two indexes per table. The primary key begins with the lookup columns and ends with the owning
-- resource's id: it finds the resources that have a value (the driving condition of a search).
-- The owner index (resource_type, id, param, values) answers "does this resource have such a
-- value?" (the other conditions, chains, _has, sort keys) without scanning a parameter's rows,
-- and finds a resource's rows when a write replaces them. On SQLite the tables are WITHOUT ROWID,
-- so a row costs two b-tree inserts (not three with a rowid table).
-- Absent optional values are '' (FHIR strings are never empty), because key columns are NOT NULL.
CREATE TABLE search_token (
    resource_type TEXT NOT NULL, param TEXT NOT NULL,
    code TEXT NOT NULL, system TEXT NOT NULL, id TEXT NOT NULL,
    CONSTRAINT search_token_key PRIMARY KEY (resource_type, param, code, system, id)
) WITHOUT ROWID;
CREATE INDEX search_token_owner ON search_token (resource_type, id, param, code, system);

CREATE TABLE search_string (
    resource_type TEXT NOT NULL, param TEXT NOT NULL,
    normalized TEXT NOT NULL, exact TEXT NOT NULL, id TEXT NOT NULL,
    CONSTRAINT search_string_key PRIMARY KEY (resource_type, param, normalized, exact, id)
) WITHOUT ROWID;
CREATE INDEX search_string_owner ON search_string (resource_type, id, param, normalized);

CREATE TABLE search_reference (
    resource_type TEXT NOT NULL, param TEXT NOT NULL,
    target_id TEXT NOT NULL, target_type TEXT NOT NULL, target_version TEXT NOT NULL, url TEXT NOT NULL,
    id TEXT NOT NULL,
    CONSTRAINT search_reference_key PRIMARY KEY (resource_type, param, target_id, target_type, target_version, url, id)
) WITHOUT ROWID;
CREATE INDEX search_reference_owner ON search_reference (resource_type, id, param, target_type, target_id);

CREATE TABLE search_date (
    resource_type TEXT NOT NULL, param TEXT NOT NULL,
    start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, id TEXT NOT NULL,
    CONSTRAINT search_date_key PRIMARY KEY (resource_type, param, start_us, end_us, id)
) WITHOUT ROWID;
CREATE INDEX search_date_owner ON search_date (resource_type, id, param, start_us, end_us);

CREATE TABLE search_number (
    resource_type TEXT NOT NULL, param TEXT NOT NULL,
    low REAL NOT NULL, high REAL NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL,
    id TEXT NOT NULL,
    CONSTRAINT search_number_key PRIMARY KEY (resource_type, param, low, high, system, code, id)
) WITHOUT ROWID;
CREATE INDEX search_number_owner ON search_number (resource_type, id, param, low, high);

CREATE TABLE search_uri (
    resource_type TEXT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL, id TEXT NOT NULL,
    CONSTRAINT search_uri_key PRIMARY KEY (resource_type, param, value, id)
) WITHOUT ROWID;
CREATE INDEX search_uri_owner ON search_uri (resource_type, id, param, value);

-- Keyed, truncated HMAC tokens of PHI values (names, identifiers, telecom, addresses, birth dates).
CREATE TABLE search_blind (
    resource_type TEXT NOT NULL, param TEXT NOT NULL, token TEXT NOT NULL, id TEXT NOT NULL,
    CONSTRAINT search_blind_key PRIMARY KEY (resource_type, param, token, id)
) WITHOUT ROWID;
CREATE INDEX search_blind_owner ON search_blind (resource_type, id, param, token);
