-- Nexmark q10 (log to file system): every bid with its day and its hour
-- and minute as text, written to Parquet files by a sink. The reference
-- suite lays the files out by those two columns; a Parquet sink lays them
-- out by stream partition (docs/connectors.md). Timed until the sink has
-- copied everything; checked by reading every file back (the view's
-- changelog, applied in order) against this query.
SELECT auction, bidder, price, date_time, extra,
       to_char(date_time, '%Y-%m-%d') AS dt, to_char(date_time, '%H:%M') AS hm
FROM bid;

CREATE MATERIALIZED VIEW nexmark_q10 AS
SELECT auction, bidder, price, date_time, extra,
       to_char(date_time, '%Y-%m-%d') AS dt, to_char(date_time, '%H:%M') AS hm
FROM bid;
CREATE SINK nexmark_q10_files FROM nexmark_q10 INTO PARQUET WITH (path = '{files}', flush_interval = '1s')
