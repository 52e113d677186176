-- The Schema Registry: schemas by global id (the same schema, by its
-- fingerprint, always has the same id; ids are never reused), the versions
-- of each subject, and compatibility and mode settings ('' is the global
-- row).
CREATE TABLE registry_schemas (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint  TEXT   NOT NULL UNIQUE,  -- sha-256 of type, canonical form and references
    schema_type  TEXT   NOT NULL,         -- AVRO, JSON or PROTOBUF
    schema       TEXT   NOT NULL,         -- as registered
    refs         TEXT   NOT NULL          -- JSON: [{"name", "subject", "version"}]
);

CREATE TABLE registry_versions (
    subject    TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    schema_id  BIGINT NOT NULL REFERENCES registry_schemas (id),
    deleted    BIGINT NOT NULL DEFAULT 0,  -- soft-deleted
    PRIMARY KEY (subject, version)
);
CREATE INDEX registry_versions_by_schema ON registry_versions (schema_id);

CREATE TABLE registry_settings (
    subject        TEXT PRIMARY KEY,
    compatibility  TEXT,
    mode           TEXT
);
