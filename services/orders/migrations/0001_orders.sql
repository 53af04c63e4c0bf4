-- The order of record. `doc` is the whole order (oms.orders.v1.Order,
-- protobuf-encoded) as the domain last wrote it; the other columns are its
-- indexed projection for lookups and list filters.
CREATE TABLE orders (
    tenant           text        NOT NULL,
    order_id         uuid        NOT NULL,
    channel          text        NOT NULL DEFAULT '',
    channel_order_id text        NOT NULL DEFAULT '',
    state            text        NOT NULL,
    promise_time     timestamptz,
    node_ids         text[]      NOT NULL DEFAULT '{}',
    create_time      timestamptz NOT NULL,
    update_time      timestamptz NOT NULL,
    version          bigint      NOT NULL DEFAULT 1,
    doc              bytea       NOT NULL,
    PRIMARY KEY (tenant, order_id)
);
CREATE UNIQUE INDEX orders_channel_order
    ON orders (tenant, channel, channel_order_id) WHERE channel_order_id <> '';
CREATE INDEX orders_by_time ON orders (tenant, create_time DESC, order_id DESC);
CREATE INDEX orders_by_state ON orders (tenant, state, create_time DESC);
CREATE INDEX orders_by_node ON orders USING gin (node_ids);

-- Every change of every order, with who and why.
CREATE TABLE order_history (
    tenant      text        NOT NULL,
    order_id    uuid        NOT NULL,
    seq         bigserial,
    change_time timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    kind        text        NOT NULL,
    reason      text        NOT NULL DEFAULT '',
    from_state  text        NOT NULL DEFAULT '',
    to_state    text        NOT NULL DEFAULT '',
    request_id  text        NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, order_id, seq)
);
