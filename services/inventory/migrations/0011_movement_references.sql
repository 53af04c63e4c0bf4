-- A movement's reference (what caused it: `fulfillmentOrders/{id}` for a
-- shipment, an ASN for a receipt) as a column, so that ListMovements
-- finds everything an order's work or a delivery moved. New movements are
-- written with it. Those recorded before have NULL until the service
-- copies theirs from the document, in batches, after it starts (through
-- the second, partial index, which empties as it goes); '' is a movement
-- without a reference.
ALTER TABLE movements ADD COLUMN IF NOT EXISTS reference text;
CREATE INDEX IF NOT EXISTS movements_by_reference
    ON movements (tenant, reference, record_time DESC, movement_id DESC)
    WHERE reference <> '';
CREATE INDEX IF NOT EXISTS movements_unreferenced ON movements (movement_id)
    WHERE reference IS NULL;
