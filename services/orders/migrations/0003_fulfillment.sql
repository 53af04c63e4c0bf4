-- The fulfillment orders of each order as the fulfillment feed last
-- reported them (the document is oms.fulfillment.v1.FulfillmentOrder):
-- the order's shipped and delivered units are summed from these.
CREATE TABLE fulfillments (
    tenant          text        NOT NULL,
    order_id        uuid        NOT NULL,
    name            text        NOT NULL,
    doc             bytea       NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE INDEX fulfillments_by_order ON fulfillments (tenant, order_id);

-- Where orders stands in the feeds it follows, per source and tenant;
-- moved in the same transaction as the work each event caused.
CREATE TABLE feed_cursors (
    source          text        NOT NULL,
    tenant          text        NOT NULL,
    cursor          text        NOT NULL DEFAULT '',
    PRIMARY KEY (source, tenant)
);
