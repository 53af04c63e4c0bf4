-- Nodes are physical locations with global ids; the tenant that creates a
-- node owns it and may share it with others (a 3PL warehouse holding stock
-- of several depositors, each tenant's stock kept apart).
CREATE TABLE nodes (
    node_id         text        PRIMARY KEY,
    owner_tenant    text        NOT NULL,
    shared_with     text[]      NOT NULL DEFAULT '{}',
    enabled         boolean     NOT NULL,
    doc             bytea       NOT NULL,          -- oms.inventory.v1.Node
    create_time     timestamptz NOT NULL,
    update_time     timestamptz NOT NULL
);
CREATE INDEX nodes_shared ON nodes USING gin (shared_with);

CREATE TABLE items (
    tenant          text        NOT NULL,
    sku             text        NOT NULL,
    doc             bytea       NOT NULL,          -- oms.inventory.v1.Item
    create_time     timestamptz NOT NULL,
    update_time     timestamptz NOT NULL,
    PRIMARY KEY (tenant, sku)
);

-- The ledger: immutable, one row per movement.
CREATE TABLE movements (
    movement_id     uuid        PRIMARY KEY,
    tenant          text        NOT NULL,
    node_id         text        NOT NULL,
    sku             text        NOT NULL,
    lot             text        NOT NULL DEFAULT '',
    kind            text        NOT NULL,
    quantity        bigint      NOT NULL,          -- signed change of on-hand
    on_hand_after   bigint      NOT NULL,
    record_time     timestamptz NOT NULL,
    doc             bytea       NOT NULL           -- oms.inventory.v1.StockMovement
);
CREATE INDEX movements_by_time ON movements (tenant, record_time DESC, movement_id DESC);
CREATE INDEX movements_by_sku ON movements (tenant, sku, node_id);

-- On-hand per tenant + node + SKU + lot: the running sum of the ledger,
-- updated in the same transaction as each movement.
CREATE TABLE stock (
    tenant          text        NOT NULL,
    node_id         text        NOT NULL,
    sku             text        NOT NULL,
    lot             text        NOT NULL DEFAULT '',
    expiry_date     text        NOT NULL DEFAULT '',
    on_hand         bigint      NOT NULL,
    PRIMARY KEY (tenant, node_id, sku, lot)
);
CREATE INDEX stock_by_sku ON stock (tenant, sku);

-- Units held back from promising at a node; sku '' is the node default.
CREATE TABLE safety_stock (
    tenant          text        NOT NULL,
    node_id         text        NOT NULL,
    sku             text        NOT NULL,
    quantity        bigint      NOT NULL,
    PRIMARY KEY (tenant, node_id, sku)
);

CREATE TABLE channel_rules (
    tenant          text        NOT NULL,
    channel         text        NOT NULL,
    doc             bytea       NOT NULL,          -- oms.inventory.v1.ChannelRule
    PRIMARY KEY (tenant, channel)
);

-- Reservations of record. `doc` is the reservation as last written.
CREATE TABLE reservations (
    tenant          text        NOT NULL,
    reservation_id  text        NOT NULL,
    state           text        NOT NULL,
    request_hash    text        NOT NULL,
    expire_time     timestamptz NOT NULL,
    create_time     timestamptz NOT NULL,
    update_time     timestamptz NOT NULL,
    reference       text        NOT NULL DEFAULT '',
    consumed        boolean     NOT NULL DEFAULT false,
    doc             bytea       NOT NULL,          -- oms.inventory.v1.Reservation
    PRIMARY KEY (tenant, reservation_id)
);
CREATE INDEX reservations_expiring ON reservations (expire_time) WHERE state = 'active';
CREATE INDEX reservations_by_time ON reservations (tenant, create_time DESC, reservation_id DESC);

-- What each live reservation holds, per SKU and node ('' = anywhere in the
-- network, before confirmation). The gate in Redis is rebuilt from these.
CREATE TABLE holds (
    tenant          text        NOT NULL,
    reservation_id  text        NOT NULL,
    sku             text        NOT NULL,
    node_id         text        NOT NULL,
    held            bigint      NOT NULL CHECK (held >= 0),
    PRIMARY KEY (tenant, reservation_id, sku, node_id)
);
CREATE INDEX holds_by_sku ON holds (tenant, sku);
