-- Nexmark q1 (currency conversion): every bid with its price in euros.
SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid
