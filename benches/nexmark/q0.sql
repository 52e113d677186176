-- Nexmark q0 (pass through): every bid, as it is. Measures the cost of
-- reading the log and writing the view's changelog.
SELECT auction, bidder, price, date_time FROM bid
