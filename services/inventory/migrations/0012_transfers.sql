-- Transfers sent in transit (TransferStock with `in_transit`): the units
-- left the sending node's on-hand with a transfer-out movement and reach
-- the receiving node's with the transfer-in movements ReceiveTransfer
-- records. `in_transit` is what is still on the way (availability shows
-- it per receiving node); `doc` is the oms.inventory.v1.Transfer.
CREATE TABLE IF NOT EXISTS transfers (
    tenant          text        NOT NULL,
    transfer_id     text        NOT NULL,
    from_node_id    text        NOT NULL,
    to_node_id      text        NOT NULL,
    sku             text        NOT NULL,
    state           text        NOT NULL,
    in_transit      bigint      NOT NULL,
    doc             bytea       NOT NULL,
    create_time     timestamptz NOT NULL,
    update_time     timestamptz NOT NULL,
    PRIMARY KEY (tenant, transfer_id)
);
CREATE INDEX IF NOT EXISTS transfers_by_time ON transfers (tenant, create_time DESC, transfer_id DESC);
CREATE INDEX IF NOT EXISTS transfers_on_the_way ON transfers (tenant, sku, to_node_id)
    WHERE in_transit > 0;
