-- Garbage collection of data objects (see the SQLite migration of the same
-- name).
ALTER TABLE objects ADD COLUMN orphaned_at_us BIGINT;
