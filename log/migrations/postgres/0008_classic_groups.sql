-- Groups of the classic join/sync protocol (see the SQLite migration of
-- the same name).
CREATE TABLE classic_groups (
    group_id TEXT PRIMARY KEY,
    state    TEXT NOT NULL
);
