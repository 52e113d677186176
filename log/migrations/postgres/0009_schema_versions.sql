-- Each stream's schemas, by version (see the SQLite migration of the same
-- name).
CREATE TABLE schema_versions (
    stream_id      BIGINT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    version        BIGINT NOT NULL,
    schema_ipc     BYTEA  NOT NULL,
    change         TEXT   NOT NULL,
    created_at_us  BIGINT NOT NULL,
    PRIMARY KEY (stream_id, version)
);

ALTER TABLE streams ADD COLUMN schema_version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE chunks ADD COLUMN schema_version BIGINT NOT NULL DEFAULT 1;

INSERT INTO schema_versions (stream_id, version, schema_ipc, change, created_at_us)
SELECT id, 1, schema_ipc, 'CREATE STREAM', created_at_us FROM streams;
