-- Consumer group membership (see the SQLite migration of the same name).
CREATE TABLE consumer_groups (
    group_id     TEXT   PRIMARY KEY,
    stream_id    BIGINT NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    partitions   BIGINT NOT NULL,
    strategy     TEXT   NOT NULL,
    generation   BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_id         TEXT   NOT NULL REFERENCES consumer_groups (group_id) ON DELETE CASCADE,
    member_id        TEXT   NOT NULL,
    heartbeat_at_us  BIGINT NOT NULL,
    timeout_us       BIGINT NOT NULL,
    PRIMARY KEY (group_id, member_id)
);
