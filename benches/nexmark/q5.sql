-- Nexmark q5 (hot items): the auctions with the most bids in each
-- 10-second window, every 2 seconds. Compared over the windows the
-- watermark has closed ({closed}). The view is the query without that
-- bound: its subqueries become stages (each auction's bids per window
-- once the window closes; the most bids per window over a stage of its
-- own), and the join over them takes back a pair made with a superseded
-- maximum.
SELECT auction_bids.auction, auction_bids.num
FROM (
    SELECT auction, count(*) AS num, window_start AS starttime
    FROM HOP(bid, date_time, INTERVAL '2 seconds', INTERVAL '10 seconds')
    GROUP BY window_start, window_end, auction
) auction_bids
JOIN (
    SELECT max(count_bids.num) AS maxn, count_bids.starttime_c
    FROM (
        SELECT count(*) AS num, window_start AS starttime_c
        FROM HOP(bid, date_time, INTERVAL '2 seconds', INTERVAL '10 seconds')
        GROUP BY auction, window_start, window_end
    ) count_bids
    GROUP BY count_bids.starttime_c
) max_bids
ON auction_bids.starttime = max_bids.starttime_c AND auction_bids.num >= max_bids.maxn
WHERE auction_bids.starttime + INTERVAL '10 seconds' <= {closed};
