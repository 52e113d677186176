-- Rows a chunk holds when that is fewer than its offsets (see the SQLite
-- migration of the same name).
ALTER TABLE chunks ADD COLUMN row_count BIGINT;
