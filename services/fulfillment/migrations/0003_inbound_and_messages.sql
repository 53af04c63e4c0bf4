-- Advance shipping notices: what a node expects to receive. The document
-- holds the expected lines; receipts live in their own table and are
-- joined in on read (one owner each).
CREATE TABLE asns (
    tenant          text        NOT NULL,
    id              uuid        NOT NULL,
    node_id         text        NOT NULL,
    doc             bytea       NOT NULL,          -- oms.fulfillment.v1.AdvanceShippingNotice
    create_time     timestamptz NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX asns_by_node ON asns (tenant, node_id, id);

-- Receipts reported by adapters, each once, and whether their good units
-- reached the inventory ledger yet (post_time) or never can (post_error).
CREATE TABLE receipts (
    tenant          text        NOT NULL,
    receipt_id      text        COLLATE "C" NOT NULL,
    asn_id          uuid,
    node_id         text        NOT NULL,
    doc             bytea       NOT NULL,          -- oms.fulfillment.v1.Receipt
    record_time     timestamptz NOT NULL,
    post_time       timestamptz,
    post_error      text,
    PRIMARY KEY (tenant, receipt_id)
);
CREATE INDEX receipts_by_asn ON receipts (tenant, asn_id) WHERE asn_id IS NOT NULL;
CREATE INDEX receipts_to_post ON receipts (record_time) WHERE post_time IS NULL AND post_error IS NULL;

-- Messages between the office and a node, sent as commands on the stream:
-- delivered when the adapter acknowledges that command, read when marked.
CREATE TABLE messages (
    tenant          text        NOT NULL,
    id              uuid        NOT NULL,
    subject         text        NOT NULL,
    node_id         text        NOT NULL,
    command_seq     bigint      NOT NULL,
    doc             bytea       NOT NULL,          -- oms.fulfillment.v1.Message, times as sent
    deliver_time    timestamptz,
    read_time       timestamptz,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX messages_by_subject ON messages (tenant, subject, id);
CREATE INDEX messages_undelivered ON messages (tenant, node_id, command_seq) WHERE deliver_time IS NULL;
