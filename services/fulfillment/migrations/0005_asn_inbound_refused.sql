-- The open notices inventory refused lines of (a SKU or node it did not
-- know), told again now and then in case they exist now.
CREATE INDEX asns_inbound_refused ON asns (inbound_post_time)
    WHERE inbound_error IS NOT NULL AND close_time IS NULL;
