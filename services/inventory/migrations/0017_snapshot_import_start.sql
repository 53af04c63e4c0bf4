-- When an import began: the moment of every count of a snapshot sent
-- without a count_time, so that an import resumed after a lost
-- connection or a crash keeps the moment its first chunk took. Imports
-- under way when this runs take the time it runs.
ALTER TABLE snapshot_imports ADD COLUMN start_time timestamptz NOT NULL DEFAULT now();
