-- Status events rewrite a fulfillment order several times over its life.
-- Room left on each page lets those updates stay on the page without
-- touching any index (state and document are not indexed): HOT updates.
ALTER TABLE fulfillment_orders SET (fillfactor = 70);

-- Adapter event ids are opaque keys: compared byte by byte, not by the
-- database's language collation, they index and look up faster.
ALTER TABLE adapter_events ALTER COLUMN event_id TYPE text COLLATE "C";
