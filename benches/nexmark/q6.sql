-- Nexmark q6 (average selling price by seller): the mean winning bid of
-- each seller's ten most recently expired auctions. The reference suite
-- writes it with an aggregate over a ROWS frame, which a view does not
-- keep; this is the same result as a top-N per seller over the auctions'
-- winning bids (RANK, ties by auction id kept apart).
SELECT seller, avg(final) AS avg_final, count(*) AS auctions
FROM (
    SELECT seller, final,
        RANK() OVER (PARTITION BY seller ORDER BY expires DESC, id DESC) AS rank_number
    FROM (
        SELECT a.id, a.seller, a.expires, max(b.price) AS final
        FROM auction a JOIN bid b ON a.id = b.auction
        WHERE b.date_time BETWEEN a.date_time AND a.expires
        GROUP BY a.id, a.seller, a.expires
    ) q
) r
WHERE rank_number <= 10
GROUP BY seller
