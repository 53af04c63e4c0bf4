-- Transfers sent in transit (SendTransfer): the units left the sending
-- node's on-hand with transfer-out movements and reach the receiving
-- node's with the transfer-in movements ReceiveTransfer records. `doc` is
-- the oms.inventory.v1.Transfer; `transfer_lines` repeats what each line
-- still has on the way, which availability shows per receiving node.
CREATE TABLE IF NOT EXISTS transfers (
    tenant          text        NOT NULL,
    transfer_id     text        NOT NULL,
    from_node_id    text        NOT NULL,
    to_node_id      text        NOT NULL,
    state           text        NOT NULL,
    doc             bytea       NOT NULL,
    create_time     timestamptz NOT NULL,
    update_time     timestamptz NOT NULL,
    PRIMARY KEY (tenant, transfer_id)
);
CREATE INDEX IF NOT EXISTS transfers_by_time ON transfers (tenant, create_time DESC, transfer_id DESC);
CREATE TABLE IF NOT EXISTS transfer_lines (
    tenant          text        NOT NULL,
    transfer_id     text        NOT NULL,
    line            int         NOT NULL,
    to_node_id      text        NOT NULL,
    sku             text        NOT NULL,
    lot             text        NOT NULL,
    in_transit      bigint      NOT NULL,
    PRIMARY KEY (tenant, transfer_id, line)
);
CREATE INDEX IF NOT EXISTS transfer_lines_on_the_way ON transfer_lines (tenant, sku, to_node_id)
    WHERE in_transit > 0;
CREATE INDEX IF NOT EXISTS transfer_lines_by_sku ON transfer_lines (tenant, sku);
