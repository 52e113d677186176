-- Nexmark q11 (user sessions): how many bids each bidder made in each of
-- their sessions (a session ends after 10 seconds without a bid).
SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM SESSION(bid, date_time, INTERVAL '10 seconds', bidder)
GROUP BY bidder, window_start, window_end
