-- Privileges and role membership. A row of `privileges` says `grantee`
-- holds `privilege` on an object: a relation ('table': a stream or a
-- view), a schema or a consumer group ('group'; name '*' for every
-- group). 'OWNER' marks the role that created the object, which holds
-- every privilege on it.
CREATE TABLE privileges (
    object_kind TEXT NOT NULL,
    object_name TEXT NOT NULL,
    grantee     TEXT NOT NULL,
    privilege   TEXT NOT NULL,
    grantor     TEXT NOT NULL,
    PRIMARY KEY (object_kind, object_name, grantee, privilege)
);
CREATE INDEX privileges_by_grantee ON privileges (grantee);

-- `member` is a member of `role`, and holds its privileges.
CREATE TABLE role_members (
    role    TEXT NOT NULL,
    member  TEXT NOT NULL,
    grantor TEXT NOT NULL,
    PRIMARY KEY (role, member)
);
