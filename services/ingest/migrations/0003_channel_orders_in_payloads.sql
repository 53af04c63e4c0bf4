-- What a channel order became is read from its accepted payloads (the
-- newest gives the order and the last body; any that cancelled makes it
-- cancelled), so a submission writes one row, its payload, instead of a
-- payload and an upsert of channel_orders.
ALTER TABLE payloads
    ADD COLUMN order_name text NOT NULL DEFAULT '',
    ADD COLUMN cancelled  boolean NOT NULL DEFAULT false;
-- What channel_orders knew goes onto the accepted payloads of each channel
-- order: the order on all of them, "cancelled" on the newest.
UPDATE payloads p SET order_name = c.order_name
  FROM channel_orders c
 WHERE p.tenant = c.tenant AND p.channel_id = c.channel_id
   AND p.channel_order_id = c.channel_order_id AND p.status = 'PAYLOAD_STATUS_ACCEPTED';
UPDATE payloads p SET cancelled = true
  FROM channel_orders c
 WHERE c.cancelled AND p.payload_id = (
       SELECT q.payload_id FROM payloads q
        WHERE q.tenant = c.tenant AND q.channel_id = c.channel_id
          AND q.channel_order_id = c.channel_order_id AND q.status = 'PAYLOAD_STATUS_ACCEPTED'
        ORDER BY q.payload_id DESC LIMIT 1);
CREATE INDEX payloads_by_channel_order
    ON payloads (tenant, channel_id, channel_order_id, payload_id DESC)
    WHERE status = 'PAYLOAD_STATUS_ACCEPTED';
DROP TABLE channel_orders;
