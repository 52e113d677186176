-- Nexmark q12 (processing-time windows): how many bids each bidder made in
-- each 10-second window of processing time. Processing time is when each
-- bid was appended to the log (PROCTIME() as a window's time column, the
-- row's _timestamp): fixed once written, so the view equals this query
-- run afterwards.
SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM TUMBLE(bid, PROCTIME(), INTERVAL '10 seconds')
GROUP BY bidder, window_start, window_end
