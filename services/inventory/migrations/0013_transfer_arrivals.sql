-- When a transfer in transit should arrive (SendTransfer's
-- expected_arrival_time), so that the late ones are found without reading
-- every transfer: the index holds only those still on the way with a date.
ALTER TABLE transfers ADD COLUMN IF NOT EXISTS expected_arrival timestamptz;
CREATE INDEX IF NOT EXISTS transfers_due ON transfers (tenant, expected_arrival, transfer_id)
    WHERE state = 'TRANSFER_STATE_IN_TRANSIT' AND expected_arrival IS NOT NULL;
