-- The schema version of each stream a view reads, as it was when the view
-- was made: the view is always planned against those versions, so a later
-- ALTER STREAM does not change what its plan reads.
-- JSON: {"<stream id>": version}; NULL for views made before versions.
ALTER TABLE views ADD COLUMN input_versions TEXT;
