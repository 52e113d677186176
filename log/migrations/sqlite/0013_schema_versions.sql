-- Each stream's schemas, by version: version 1 is the schema it was
-- created with, and each change of schema adds the next. A chunk records
-- the version of the schema it was written with, so that it can be read
-- through a later one without being rewritten.
CREATE TABLE schema_versions (
    stream_id      BIGINT  NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    version        INTEGER NOT NULL,
    schema_ipc     BLOB    NOT NULL,   -- Arrow IPC schema message
    change         TEXT    NOT NULL,   -- what made it, e.g. CREATE STREAM
    created_at_us  BIGINT  NOT NULL,
    PRIMARY KEY (stream_id, version)
);

ALTER TABLE streams ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE chunks ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1;

INSERT INTO schema_versions (stream_id, version, schema_ipc, change, created_at_us)
SELECT id, 1, schema_ipc, 'CREATE STREAM', created_at_us FROM streams;
