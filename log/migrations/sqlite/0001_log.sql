-- The log's metadata: streams, their partitions' next offsets, the chunk
-- index, the objects that hold chunks, and idempotent-producer state.
-- PostgreSQL keeps the same tables and columns (migrations/postgres).

CREATE TABLE streams (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused
    name                TEXT    NOT NULL UNIQUE,
    schema_ipc          BLOB    NOT NULL,                   -- Arrow IPC schema message
    partitions          INTEGER NOT NULL,
    key_columns         TEXT    NOT NULL,                   -- JSON array of column names
    event_time_column   TEXT,
    watermark_delay_us  BIGINT,
    retention_us        BIGINT,
    created_at_us       BIGINT  NOT NULL
);

CREATE TABLE partitions (
    stream_id     BIGINT  NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    partition_no  INTEGER NOT NULL,
    next_offset   BIGINT  NOT NULL,
    PRIMARY KEY (stream_id, partition_no)
);

CREATE TABLE objects (
    object_key     TEXT   PRIMARY KEY,
    size_bytes     BIGINT NOT NULL,
    created_at_us  BIGINT NOT NULL
);

CREATE TABLE chunks (
    stream_id          BIGINT  NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    partition_no       INTEGER NOT NULL,
    base_offset        BIGINT  NOT NULL,
    end_offset         BIGINT  NOT NULL,   -- exclusive
    object_key         TEXT    NOT NULL REFERENCES objects (object_key),
    byte_start         BIGINT  NOT NULL,
    byte_len           BIGINT  NOT NULL,
    min_event_time_us  BIGINT,
    max_event_time_us  BIGINT,
    min_append_time_us BIGINT  NOT NULL,
    max_append_time_us BIGINT  NOT NULL,
    PRIMARY KEY (stream_id, partition_no, base_offset)
);
CREATE INDEX chunks_by_end ON chunks (stream_id, partition_no, end_offset);
CREATE INDEX chunks_by_object ON chunks (object_key);

CREATE TABLE producers (
    producer_id    TEXT   NOT NULL,
    stream_id      BIGINT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    last_sequence  BIGINT NOT NULL,
    last_ack       TEXT   NOT NULL,        -- JSON: [[partition, base_offset, rows], ...]
    PRIMARY KEY (producer_id, stream_id)
);
