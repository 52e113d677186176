-- Nexmark q4 (average price per category): the average winning bid of
-- the auctions of each category.
SELECT q.category, avg(q.final) AS avg_final
FROM (
    SELECT max(b.price) AS final, a.category
    FROM auction a JOIN bid b ON a.id = b.auction
    WHERE b.date_time BETWEEN a.date_time AND a.expires
    GROUP BY a.id, a.category
) q
GROUP BY q.category;

-- As views (one view holds one GROUP BY level): the winning bid of each
-- auction, then the mean per category over it (a view over a view with
-- updates: the mean takes a superseded maximum back).
CREATE MATERIALIZED VIEW nexmark_q4_winning AS
    SELECT a.id, a.category, max(b.price) AS final
    FROM auction a JOIN bid b ON a.id = b.auction
    WHERE b.date_time BETWEEN a.date_time AND a.expires
    GROUP BY a.id, a.category;
CREATE MATERIALIZED VIEW nexmark_q4 AS
    SELECT category, avg(final) AS avg_final FROM nexmark_q4_winning GROUP BY category;
