-- Transactional producers (see the SQLite migration of the same name).
CREATE TABLE transactional_producers (
    transactional_id TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);
