-- FHIR Bulk Data export ($export, src/service/export/): one row per job, its output files, and
-- their content in chunks. Everything that could hold PHI (the kick-off URL with its
-- _typeFilter, the NDJSON lines, the patients a file concerns) is sealed with the key ring
-- (AES-256-GCM, bound to its job, file and chunk); the rest is bookkeeping without PHI.
CREATE TABLE export_jobs (
    id               TEXT    NOT NULL PRIMARY KEY, -- random UUID v4: unguessable
    owner            TEXT    NOT NULL,             -- keyed HMAC of issuer, subject, client, role, org
    status           TEXT    NOT NULL,             -- 'running', 'completed' or 'failed'
    request          BYTEA   NOT NULL,             -- sealed: the kick-off URL
    transaction_time BIGINT NOT NULL,             -- microseconds since the Unix epoch, UTC
    finished_at      BIGINT,
    expires_at       BIGINT,                      -- set when the job ends; gone (404) from then on
    error            TEXT                          -- why a failed job failed; never PHI
);
CREATE INDEX export_jobs_expiry ON export_jobs (expires_at);

CREATE TABLE export_files (
    job_id        TEXT    NOT NULL,
    file_no       BIGINT NOT NULL,                -- 0, 1, … in the order the manifest lists them
    resource_type TEXT    NOT NULL,                -- OperationOutcome for the files of `error`
    is_error      BIGINT NOT NULL,                -- 1: listed under `error` in the manifest
    count         BIGINT NOT NULL,                -- resources (lines) in the file
    chunks        BIGINT NOT NULL,                -- its content is chunks 0 .. chunks - 1
    patients      BYTEA   NOT NULL,                -- sealed: the Patients the file concerns (for the audit trail)
    PRIMARY KEY (job_id, file_no)
);

CREATE TABLE export_chunks (
    job_id   TEXT    NOT NULL,
    file_no  BIGINT NOT NULL,
    chunk_no BIGINT NOT NULL,
    key_id   BIGINT NOT NULL,
    content  BYTEA   NOT NULL,                     -- sealed NDJSON lines
    PRIMARY KEY (job_id, file_no, chunk_no)
);
