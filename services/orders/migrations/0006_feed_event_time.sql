-- When the event at each stored cursor happened (by the source's clock):
-- after the source's retention deleted events the follower never read, it
-- resyncs from what changed since then. NULL: not known (a cursor stored
-- before this column), so a resync takes everything.
ALTER TABLE feed_cursors ADD COLUMN event_time timestamptz;
