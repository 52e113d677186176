-- Ownership of views by lease, and producer epochs (see the SQLite
-- migration of the same name).
ALTER TABLE views
    ADD COLUMN owner TEXT,
    ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN lease_until_us BIGINT;
ALTER TABLE producers ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
