-- Consumer group membership, shared by every agent: the group's stream,
-- partition count, strategy and generation, and its live members with
-- their heartbeats. Assignment is computed from these (see groups.rs).
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
