-- Nexmark q8 (monitor new users): the people who opened an auction in the
-- same 10-second window in which they registered. Compared over the
-- windows the watermark has closed ({closed}). The view is the query
-- without that bound: each window's people and sellers become stages
-- (insert-only), joined.
SELECT p.id, p.name, p.starttime
FROM (
    SELECT id, name, window_start AS starttime, window_end AS endtime
    FROM TUMBLE(person, date_time, INTERVAL '10 seconds')
    GROUP BY id, name, window_start, window_end
) p
JOIN (
    SELECT seller, window_start AS starttime, window_end AS endtime
    FROM TUMBLE(auction, date_time, INTERVAL '10 seconds')
    GROUP BY seller, window_start, window_end
) a ON p.id = a.seller AND p.starttime = a.starttime AND p.endtime = a.endtime
WHERE p.endtime <= {closed};
