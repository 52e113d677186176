-- Users and roles. A password is kept only as its SCRAM-SHA-256 verifier
-- (`SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key>`, the
-- form PostgreSQL stores); flags are 0 or 1.
CREATE TABLE roles (
    name          TEXT PRIMARY KEY,
    superuser     INTEGER NOT NULL,
    can_login     INTEGER NOT NULL,
    verifier      TEXT,
    created_at_us INTEGER NOT NULL
);
