-- Consumer groups: the offsets each group has committed, per stream
-- partition (the next offset the group will read). Membership and
-- assignment are live state held by the agent, not stored here.

CREATE TABLE group_offsets (
    group_id       TEXT    NOT NULL,
    stream_id      BIGINT  NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
    partition_no   INTEGER NOT NULL,
    next_offset    BIGINT  NOT NULL,
    committed_at_us BIGINT NOT NULL,
    PRIMARY KEY (group_id, stream_id, partition_no)
);
