-- Garbage collection of data objects: when an object was first found with
-- no chunk referencing it (after retention, compaction or a dropped
-- stream). It is deleted once that is older than the grace period, so a
-- reader that listed its chunks just before can still fetch them.
ALTER TABLE objects ADD COLUMN orphaned_at_us BIGINT;
