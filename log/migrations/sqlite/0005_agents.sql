-- The agents (server processes) sharing this metadata store: where each
-- listens, and its heartbeat. An agent whose heartbeat is older than the
-- liveness timeout is considered dead.

CREATE TABLE agents (
    agent_id         TEXT   PRIMARY KEY,
    addresses        TEXT   NOT NULL,   -- JSON: {"pgwire": "host:port", ...}
    version          TEXT   NOT NULL,
    started_at_us    BIGINT NOT NULL,
    heartbeat_at_us  BIGINT NOT NULL,
    stopped_at_us    BIGINT
);
