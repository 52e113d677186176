-- Nexmark q5 (hot items): the auctions with the most bids in each
-- 10-second window, every 2 seconds. Compared over the windows the
-- watermark has closed ({closed}).
SELECT auction_bids.auction, auction_bids.num
FROM (
    SELECT auction, count(*) AS num, window_start AS starttime
    FROM HOP(bid, date_time, INTERVAL '2 seconds', INTERVAL '10 seconds')
    GROUP BY window_start, auction
) auction_bids
JOIN (
    SELECT max(count_bids.num) AS maxn, count_bids.starttime_c
    FROM (
        SELECT count(*) AS num, window_start AS starttime_c
        FROM HOP(bid, date_time, INTERVAL '2 seconds', INTERVAL '10 seconds')
        GROUP BY auction, window_start
    ) count_bids
    GROUP BY count_bids.starttime_c
) max_bids
ON auction_bids.starttime = max_bids.starttime_c AND auction_bids.num >= max_bids.maxn
WHERE auction_bids.starttime + INTERVAL '10 seconds' <= {closed};

-- As views (one view holds one GROUP BY level): each auction's bids per
-- window once the window closes (insert-only), the most bids per window
-- (a view with updates as windows arrive), and the join of the two (a
-- pair made with a superseded maximum is taken back).
CREATE MATERIALIZED VIEW nexmark_q5_counts AS
    SELECT auction, count(*) AS num, window_start AS starttime
    FROM HOP(bid, date_time, INTERVAL '2 seconds', INTERVAL '10 seconds')
    GROUP BY window_start, window_end, auction;
CREATE MATERIALIZED VIEW nexmark_q5_max AS
    SELECT starttime, max(num) AS maxn FROM nexmark_q5_counts GROUP BY starttime;
CREATE MATERIALIZED VIEW nexmark_q5 AS
    SELECT c.auction, c.num
    FROM nexmark_q5_counts c JOIN nexmark_q5_max m ON c.starttime = m.starttime
    WHERE c.num >= m.maxn;
