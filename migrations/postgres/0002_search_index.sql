-- Search index rows of current versions, written in the same transaction as the version they
-- describe. PHI parameters never land here in plain text: they go to search_blind as keyed tokens.
CREATE TABLE search_token (
    resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT
);
CREATE INDEX search_token_lookup ON search_token (resource_type, param, code, system);
CREATE INDEX search_token_owner ON search_token (resource_type, id);

CREATE TABLE search_string (
    resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    normalized TEXT NOT NULL, exact TEXT NOT NULL
);
CREATE INDEX search_string_lookup ON search_string (resource_type, param, normalized);
CREATE INDEX search_string_owner ON search_string (resource_type, id);

CREATE TABLE search_reference (
    resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    target_type TEXT, target_id TEXT, target_version TEXT, url TEXT NOT NULL
);
CREATE INDEX search_reference_lookup ON search_reference (resource_type, param, target_id, target_type);
CREATE INDEX search_reference_owner ON search_reference (resource_type, id);

CREATE TABLE search_date (
    resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    start_us BIGINT NOT NULL, end_us BIGINT NOT NULL
);
CREATE INDEX search_date_lookup ON search_date (resource_type, param, start_us);
CREATE INDEX search_date_owner ON search_date (resource_type, id);

CREATE TABLE search_number (
    resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    low DOUBLE PRECISION NOT NULL, high DOUBLE PRECISION NOT NULL,
    system TEXT, code TEXT
);
CREATE INDEX search_number_lookup ON search_number (resource_type, param, low);
CREATE INDEX search_number_owner ON search_number (resource_type, id);

CREATE TABLE search_uri (
    resource_type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX search_uri_lookup ON search_uri (resource_type, param, value);
CREATE INDEX search_uri_owner ON search_uri (resource_type, id);

-- Keyed, truncated HMAC tokens of PHI values (names, identifiers, telecom, addresses, birth dates).
-- The lookup key is the primary key (one b-tree on SQLite: WITHOUT ROWID), so every token costs
-- two b-tree inserts (key and owner) rather than three.
CREATE TABLE search_blind (
    resource_type TEXT NOT NULL, param TEXT NOT NULL, token TEXT NOT NULL, id TEXT NOT NULL,
    CONSTRAINT search_blind_key PRIMARY KEY (resource_type, param, token, id)
);
CREATE INDEX search_blind_owner ON search_blind (resource_type, id);
