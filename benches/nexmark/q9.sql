-- Nexmark q9 (winning bids): each auction's highest bid within its
-- lifetime, with the auction. RANK rather than ROW_NUMBER: bids tied on
-- price and time are all kept (ROW_NUMBER would keep any one of them,
-- which no comparison could check).
SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, category,
    auction, bidder, price, bid_date_time
FROM (
    SELECT a.id, a.item_name, a.description, a.initial_bid, a.reserve, a.date_time, a.expires,
        a.seller, a.category, b.auction, b.bidder, b.price, b.date_time AS bid_date_time,
        RANK() OVER (PARTITION BY a.id ORDER BY b.price DESC, b.date_time) AS rank_number
    FROM auction a JOIN bid b ON a.id = b.auction
    WHERE b.date_time BETWEEN a.date_time AND a.expires
) t
WHERE rank_number <= 1
