-- What a notice still brings is told to inventory as expected inbound
-- supply. inbound_revision counts the changes to it (created, each
-- receipt against it, its close); inbound_posted is the revision
-- inventory was last told, so a notice is told again while they differ.
-- Notices from before start at revision 1, not told: the poster tells
-- inventory of them once.
ALTER TABLE asns ADD COLUMN close_time        timestamptz;
ALTER TABLE asns ADD COLUMN inbound_revision  bigint NOT NULL DEFAULT 1;
ALTER TABLE asns ADD COLUMN inbound_posted    bigint NOT NULL DEFAULT 0;
ALTER TABLE asns ADD COLUMN inbound_post_time timestamptz;
ALTER TABLE asns ADD COLUMN inbound_error     text;
CREATE INDEX asns_inbound_to_post ON asns (create_time) WHERE inbound_posted < inbound_revision;
