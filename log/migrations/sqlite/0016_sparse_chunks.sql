-- Rows a chunk holds when that is fewer than its offsets: a chunk of a
-- table's log compacted by key keeps only each key's latest row, with the
-- rows' offsets in its own column. NULL: one row per offset.
ALTER TABLE chunks ADD COLUMN row_count BIGINT;
