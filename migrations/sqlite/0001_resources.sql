-- Every version of every resource, append-only. The body is sealed (AES-256-GCM, bound to
-- type/id/version); nothing in this table is readable without the key ring.
CREATE TABLE resource_versions (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT, -- global write order, for history paging
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    last_updated  INTEGER NOT NULL,                  -- microseconds since the Unix epoch, UTC
    deleted       INTEGER NOT NULL,                  -- 1 for a delete marker (no body)
    method        TEXT    NOT NULL,                  -- POST, PUT, PATCH or DELETE
    key_id        INTEGER NOT NULL,                  -- key that sealed the body (0 for delete markers)
    ciphertext    BLOB,
    CONSTRAINT resource_versions_key UNIQUE (resource_type, id, version)
);
CREATE INDEX resource_versions_type_seq ON resource_versions (resource_type, seq);
CREATE INDEX resource_versions_key_id ON resource_versions (key_id);

-- The current version of each resource, so reads never scan history.
CREATE TABLE resource_heads (
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    deleted       INTEGER NOT NULL,
    last_updated  INTEGER NOT NULL,
    compartment   TEXT,                               -- patient id this resource belongs to (sharding key)
    PRIMARY KEY (resource_type, id)
) WITHOUT ROWID;
CREATE INDEX resource_heads_updated ON resource_heads (resource_type, last_updated);
