-- Transactional producers: each transactional id's current epoch. Starting
-- a producer bumps it, which fences every older instance of the same id: a
-- transaction's commit carries its epoch and is refused unless that is
-- still the current one.
CREATE TABLE transactional_producers (
    transactional_id TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL
);
