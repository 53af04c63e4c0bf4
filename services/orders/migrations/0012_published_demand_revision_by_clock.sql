-- Revisions of the demand told to inventory are the database clock's
-- microseconds (repo::published_demand::next_revision): a sequence would
-- start again below inventory's stored figures if this database were
-- restored, and inventory would ignore every figure sent.
DROP SEQUENCE published_demand_revision;
