-- Fulfillment orders: the work of one order at one node. The document is
-- the oms.fulfillment.v1.FulfillmentOrder; columns beside it find rows.
CREATE TABLE fulfillment_orders (
    tenant          text        NOT NULL,
    id              uuid        NOT NULL,
    order_name      text        NOT NULL,
    node_id         text        NOT NULL,
    state           text        NOT NULL,
    doc             bytea       NOT NULL,
    create_time     timestamptz NOT NULL,
    update_time     timestamptz NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX fulfillment_orders_by_order ON fulfillment_orders (tenant, order_name);
CREATE INDEX fulfillment_orders_by_node ON fulfillment_orders (tenant, node_id, id);

-- Commands for the nodes' adapters, numbered per tenant. A number is taken
-- under the tenant's head row, held until commit, so commands commit in
-- number order: a reader never skips one that commits late.
CREATE TABLE command_heads (
    tenant          text        PRIMARY KEY,
    head            bigint      NOT NULL
);
CREATE TABLE commands (
    tenant          text        NOT NULL,
    seq             bigint      NOT NULL,
    command_id      uuid        NOT NULL,
    node_id         text        NOT NULL,
    body            bytea       NOT NULL,          -- oms.fulfillment.v1.Command without its sequence
    create_time     timestamptz NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX commands_by_node ON commands (tenant, node_id, seq);

-- Adapter events applied or refused, by the adapter's event id: a resent
-- event gets the first answer and changes nothing again.
CREATE TABLE adapter_events (
    tenant          text        NOT NULL,
    event_id        text        NOT NULL,
    ack             bytea       NOT NULL,          -- oms.fulfillment.v1.EventAck
    apply_time      timestamptz NOT NULL,
    PRIMARY KEY (tenant, event_id)
);

-- Adapters as last seen: nodes served, liveness and how far they acknowledged.
CREATE TABLE adapter_sessions (
    tenant          text        NOT NULL,
    adapter_id      text        NOT NULL,
    session_id      uuid        NOT NULL,
    node_ids        text[]      NOT NULL,
    software        text        NOT NULL,
    connected       boolean     NOT NULL,
    connect_time    timestamptz NOT NULL,
    last_seen_time  timestamptz NOT NULL,
    sent_seq        bigint      NOT NULL,
    acked_seq       bigint      NOT NULL,
    PRIMARY KEY (tenant, adapter_id)
);
