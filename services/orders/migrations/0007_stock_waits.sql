-- What each step waiting for stock needs: a backordered order's `reserve`
-- step, or a rest or reroute that no node could take for want of stock.
-- The inventory feed follower wakes the oldest waits that the network's
-- availability now covers (see workers::stock_feed), rather than each
-- waiting out its backoff. A row goes with its step.
CREATE TABLE stock_waits (
    tenant      text        NOT NULL,
    order_id    uuid        NOT NULL,
    step        text        NOT NULL,
    sku         text        NOT NULL,
    -- Units of the SKU the step asks for (all of them, not only those
    -- missing: it holds all of its lines or none).
    wanted      bigint      NOT NULL,
    -- Its turn: when the order was created (older orders are woken first).
    since       timestamptz NOT NULL,
    PRIMARY KEY (tenant, order_id, step, sku),
    FOREIGN KEY (tenant, order_id, step) REFERENCES saga_steps ON DELETE CASCADE
);
CREATE INDEX stock_waits_by_sku ON stock_waits (tenant, sku, since);
