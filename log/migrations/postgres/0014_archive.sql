-- How old a stream's rows get before maintenance rewrites their chunks as
-- Parquet (the stream's archive). NULL: chunks stay as written.
ALTER TABLE streams ADD COLUMN archive_after_us BIGINT;
