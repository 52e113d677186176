-- Users and roles (see the SQLite migration of the same name).
CREATE TABLE roles (
    name          TEXT PRIMARY KEY,
    superuser     BIGINT NOT NULL,
    can_login     BIGINT NOT NULL,
    verifier      TEXT,
    created_at_us BIGINT NOT NULL
);
