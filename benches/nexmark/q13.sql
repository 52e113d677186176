-- Nexmark q13 (bounded side input join): every bid with the value of its
-- auction's key in a side table of 10,000 rows. The reference suite reads
-- the side input from a file at processing time; here it is a table
-- (filled before the view is made, so the join is against its rows).
SELECT b.auction, b.bidder, b.price, b.date_time, s.value
FROM bid b JOIN side_input s ON b.auction % 10000 = s.key;

CREATE TABLE side_input (key BIGINT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO side_input SELECT value, 'side-' || CAST(value AS TEXT) FROM generate_series(0, 9999);
CREATE MATERIALIZED VIEW nexmark_q13 AS
SELECT b.auction, b.bidder, b.price, b.date_time, s.value
FROM bid b JOIN side_input s ON b.auction % 10000 = s.key;
