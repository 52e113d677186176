-- Groups of the classic join/sync protocol (Kafka consumer groups): each
-- group's whole state (phase, generation, leader, members with their
-- protocols and assignments) as one JSON document, read and written in
-- one transaction per operation (see groups/classic.rs). Their committed
-- offsets are in group_offsets, with every other group's.
CREATE TABLE classic_groups (
    group_id TEXT PRIMARY KEY,
    state    TEXT NOT NULL
);
