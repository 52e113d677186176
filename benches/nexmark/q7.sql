-- Nexmark q7 (highest bid): the bids with the highest price of their
-- 10-second window. Compared over the windows the watermark has closed
-- ({closed}: a window's maximum is final only then). The view is the
-- query without that bound: the windows' maxima become a stage
-- (insert-only), joined with the bids.
SELECT b.auction, b.price, b.bidder, b.date_time, b.extra
FROM bid b
JOIN (
    SELECT max(price) AS maxprice, window_end
    FROM TUMBLE(bid, date_time, INTERVAL '10 seconds')
    GROUP BY window_end
) b1 ON b.price = b1.maxprice
WHERE b.date_time BETWEEN b1.window_end - INTERVAL '10 seconds' AND b1.window_end
    AND b1.window_end <= {closed};
