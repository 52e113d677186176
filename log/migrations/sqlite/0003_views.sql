-- Materialized views: their names and SQL definitions. The SQL layer
-- plans them; the log only keeps them.

CREATE TABLE views (
    name           TEXT    PRIMARY KEY,
    definition     TEXT    NOT NULL,
    created_at_us  BIGINT  NOT NULL
);
