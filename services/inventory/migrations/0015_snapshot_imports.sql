-- Snapshot imports under way. An import commits its rows a chunk at a
-- time, so that neither a gate rebuild nor a shipment of its lots waits
-- for the whole import; this row says how far it got (rows in the order
-- they apply) and what it answered so far, so a repeat of the request
-- (the client retrying after a lost connection, a crash) goes on from
-- there. Deleted when the import's answer is stored with its request_id;
-- an abandoned one after the idempotency retention.
CREATE TABLE snapshot_imports (
    tenant        text        NOT NULL,
    request_id    text        NOT NULL,
    request_hash  bytea       NOT NULL,
    rows_done     integer     NOT NULL DEFAULT 0,
    answer        bytea       NOT NULL,
    update_time   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, request_id)
);
