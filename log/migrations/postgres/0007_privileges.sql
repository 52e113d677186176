-- Privileges and role membership (see the SQLite migration of the same
-- name).
CREATE TABLE privileges (
    object_kind TEXT NOT NULL,
    object_name TEXT NOT NULL,
    grantee     TEXT NOT NULL,
    privilege   TEXT NOT NULL,
    grantor     TEXT NOT NULL,
    PRIMARY KEY (object_kind, object_name, grantee, privilege)
);
CREATE INDEX privileges_by_grantee ON privileges (grantee);

CREATE TABLE role_members (
    role    TEXT NOT NULL,
    member  TEXT NOT NULL,
    grantor TEXT NOT NULL,
    PRIMARY KEY (role, member)
);
