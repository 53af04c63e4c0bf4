-- Payloads are listed newest first by their id: a UUIDv7 taken when the
-- payload arrives, so it orders them by arrival, and a key of (tenant, id)
-- serves both the lookup and the list. The index by receive time was a
-- second entry for every payload received.
DROP INDEX payloads_by_time;
ALTER TABLE payloads DROP CONSTRAINT payloads_pkey;
ALTER TABLE payloads ADD PRIMARY KEY (tenant, payload_id);
