-- Connectors and their leases (see the SQLite migration of the same name).
CREATE TABLE connectors (
    name           TEXT    PRIMARY KEY,
    kind           TEXT    NOT NULL,
    definition     TEXT    NOT NULL,
    created_at_us  BIGINT  NOT NULL,
    owner          TEXT,
    epoch          BIGINT  NOT NULL DEFAULT 0,
    lease_until_us BIGINT
);
