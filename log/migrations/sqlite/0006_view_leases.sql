-- Ownership of views by lease: the agent maintaining a view (owner), the
-- lease's epoch (bumped by every acquisition) and its expiry. An owner
-- whose epoch is superseded cannot commit a checkpoint; its changelog
-- appends are fenced by the producer's epoch below.
ALTER TABLE views ADD COLUMN owner TEXT;
ALTER TABLE views ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE views ADD COLUMN lease_until_us BIGINT;

-- The highest epoch a producer has been fenced to: appends carrying an
-- older epoch are refused.
ALTER TABLE producers ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
