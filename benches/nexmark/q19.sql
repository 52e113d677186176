-- Nexmark q19 (auction top-10 price): each auction's ten highest bids,
-- with RANK so that ties at the tenth place are all kept.
SELECT auction, bidder, price, channel, url, date_time, extra, rank_number
FROM (
    SELECT auction, bidder, price, channel, url, date_time, extra,
        RANK() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number
    FROM bid
) t
WHERE rank_number <= 10
