-- Connectors (sinks now; sources later): each one's statement, and the
-- lease of the agent that runs it (owner, epoch bumped by every
-- acquisition, expiry), as for views. How far a sink got is recorded in
-- its destination, not here.
CREATE TABLE connectors (
    name           TEXT    PRIMARY KEY,
    kind           TEXT    NOT NULL,  -- 'sink'
    definition     TEXT    NOT NULL,  -- the CREATE statement
    created_at_us  BIGINT  NOT NULL,
    owner          TEXT,
    epoch          BIGINT  NOT NULL DEFAULT 0,
    lease_until_us BIGINT
);
