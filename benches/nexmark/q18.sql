-- Nexmark q18 (last bid per bidder and auction), with RANK so that bids
-- at the same instant are all kept.
SELECT auction, bidder, price, channel, url, date_time, extra
FROM (
    SELECT auction, bidder, price, channel, url, date_time, extra,
        RANK() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rank_number
    FROM bid
) t
WHERE rank_number <= 1
