-- Search index rows of current versions, written in the same transaction as the version they
-- describe. PHI parameters never land here in plain text: they go to search_blind as keyed tokens.
--
-- Each table's primary key is its only index: it begins with the lookup columns (searches) and
-- ends with the owning resource's id. A write removes the previous version's rows by their exact
-- keys, which resource_versions.index_rows recorded, so no second "owner" index is needed and
-- every row costs one b-tree insert (SQLite: WITHOUT ROWID) instead of three.
-- Absent optional values are '' (FHIR strings are never empty), because key columns are NOT NULL.
CREATE TABLE search_token (
    resource_type TEXT NOT NULL, param TEXT NOT NULL,
    code TEXT NOT NULL, system TEXT NOT NULL, id TEXT NOT NULL,
    CONSTRAINT search_token_key PRIMARY KEY (resource_type, param, code, system, id)
) WITHOUT ROWID;

CREATE TABLE search_string (
    resource_type TEXT NOT NULL, param TEXT NOT NULL,
    normalized TEXT NOT NULL, exact TEXT NOT NULL, id TEXT NOT NULL,
    CONSTRAINT search_string_key PRIMARY KEY (resource_type, param, normalized, exact, id)
) WITHOUT ROWID;

CREATE TABLE search_reference (
    resource_type TEXT NOT NULL, param TEXT NOT NULL,
    target_id TEXT NOT NULL, target_type TEXT NOT NULL, target_version TEXT NOT NULL, url TEXT NOT NULL,
    id TEXT NOT NULL,
    CONSTRAINT search_reference_key PRIMARY KEY (resource_type, param, target_id, target_type, target_version, url, id)
) WITHOUT ROWID;

CREATE TABLE search_date (
    resource_type TEXT NOT NULL, param TEXT NOT NULL,
    start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, id TEXT NOT NULL,
    CONSTRAINT search_date_key PRIMARY KEY (resource_type, param, start_us, end_us, id)
) WITHOUT ROWID;

CREATE TABLE search_number (
    resource_type TEXT NOT NULL, param TEXT NOT NULL,
    low REAL NOT NULL, high REAL NOT NULL, system TEXT NOT NULL, code TEXT NOT NULL,
    id TEXT NOT NULL,
    CONSTRAINT search_number_key PRIMARY KEY (resource_type, param, low, high, system, code, id)
) WITHOUT ROWID;

CREATE TABLE search_uri (
    resource_type TEXT NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL, id TEXT NOT NULL,
    CONSTRAINT search_uri_key PRIMARY KEY (resource_type, param, value, id)
) WITHOUT ROWID;

-- Keyed, truncated HMAC tokens of PHI values (names, identifiers, telecom, addresses, birth dates).
CREATE TABLE search_blind (
    resource_type TEXT NOT NULL, param TEXT NOT NULL, token TEXT NOT NULL, id TEXT NOT NULL,
    CONSTRAINT search_blind_key PRIMARY KEY (resource_type, param, token, id)
) WITHOUT ROWID;
