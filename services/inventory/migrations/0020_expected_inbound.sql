-- What inbound deliveries (suppliers' advance shipping notices) still
-- bring to a node, as their source (the fulfillment service) last said
-- (SetExpectedInbound). Availability shows these units as expected
-- inbound and by arrival time; it never promises them. A delivery that
-- brings nothing more keeps its row, with its revision, so that an older
-- statement arriving late cannot bring its units back.
CREATE TABLE expected_inbounds (
    tenant           text        NOT NULL,
    source           text        NOT NULL,
    inbound_id       text        NOT NULL,
    node_id          text        NOT NULL,
    expected_arrival timestamptz,
    revision         bigint      NOT NULL,
    update_time      timestamptz NOT NULL,
    PRIMARY KEY (tenant, source, inbound_id)
);

-- Units still expected per SKU; only lines with units.
CREATE TABLE expected_inbound_lines (
    tenant     text   NOT NULL,
    source     text   NOT NULL,
    inbound_id text   NOT NULL,
    sku        text   NOT NULL,
    units      bigint NOT NULL CHECK (units > 0),
    PRIMARY KEY (tenant, source, inbound_id, sku),
    FOREIGN KEY (tenant, source, inbound_id)
        REFERENCES expected_inbounds (tenant, source, inbound_id) ON DELETE CASCADE
);

-- Availability reads them by SKU.
CREATE INDEX expected_inbound_lines_by_sku ON expected_inbound_lines (tenant, sku);
