-- The log's metadata in PostgreSQL: the same tables and columns as the
-- SQLite store (migrations/sqlite, whose files explain each table), with
-- every integer 64-bit. Applied at agent start-up under the migrator's
-- advisory lock, so agents starting together migrate once.

CREATE TABLE streams (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
    name                TEXT   NOT NULL UNIQUE,
    schema_ipc          BYTEA  NOT NULL,
    partitions          BIGINT NOT NULL,
    key_columns         TEXT   NOT NULL,
    event_time_column   TEXT,
    watermark_delay_us  BIGINT,
    retention_us        BIGINT,
    created_at_us       BIGINT NOT NULL
);

CREATE TABLE partitions (
    stream_id     BIGINT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    partition_no  BIGINT NOT NULL,
    next_offset   BIGINT NOT NULL,
    PRIMARY KEY (stream_id, partition_no)
);

CREATE TABLE objects (
    object_key     TEXT   PRIMARY KEY,
    size_bytes     BIGINT NOT NULL,
    created_at_us  BIGINT NOT NULL
);

CREATE TABLE chunks (
    stream_id          BIGINT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    partition_no       BIGINT NOT NULL,
    base_offset        BIGINT NOT NULL,
    end_offset         BIGINT NOT NULL,
    object_key         TEXT   NOT NULL REFERENCES objects (object_key),
    byte_start         BIGINT NOT NULL,
    byte_len           BIGINT NOT NULL,
    min_event_time_us  BIGINT,
    max_event_time_us  BIGINT,
    min_append_time_us BIGINT NOT NULL,
    max_append_time_us BIGINT NOT NULL,
    PRIMARY KEY (stream_id, partition_no, base_offset)
);
CREATE INDEX chunks_by_end ON chunks (stream_id, partition_no, end_offset);
CREATE INDEX chunks_by_object ON chunks (object_key);

CREATE TABLE producers (
    producer_id    TEXT   NOT NULL,
    stream_id      BIGINT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    last_sequence  BIGINT NOT NULL,
    last_ack       TEXT   NOT NULL,
    progress       TEXT,
    PRIMARY KEY (producer_id, stream_id)
);

CREATE TABLE group_offsets (
    group_id        TEXT   NOT NULL,
    stream_id       BIGINT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    partition_no    BIGINT NOT NULL,
    next_offset     BIGINT NOT NULL,
    committed_at_us BIGINT NOT NULL,
    PRIMARY KEY (group_id, stream_id, partition_no)
);

CREATE TABLE views (
    name               TEXT   PRIMARY KEY,
    dataflow           TEXT   NOT NULL UNIQUE,
    definition         TEXT   NOT NULL,
    created_at_us      BIGINT NOT NULL,
    checkpoint_no      BIGINT,
    input_offsets      TEXT,
    state_key          TEXT,
    checkpointed_at_us BIGINT
);

CREATE TABLE agents (
    agent_id         TEXT   PRIMARY KEY,
    addresses        TEXT   NOT NULL,
    version          TEXT   NOT NULL,
    started_at_us    BIGINT NOT NULL,
    heartbeat_at_us  BIGINT NOT NULL,
    stopped_at_us    BIGINT
);
