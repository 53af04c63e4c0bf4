-- What orders waiting for stock (backorders) ask for, per SKU and sales
-- channel ('' = orders of no channel), as the orders service last said
-- (SetBackorderDemand). Published availability (network and channel
-- scopes) leaves these units out: they go to the backorders when stock
-- comes. A figure of 0 stays, with its revision, so that an older call
-- arriving late cannot set it back.
CREATE TABLE backorder_demand (
    tenant      text        NOT NULL,
    sku         text        NOT NULL,
    channel     text        NOT NULL,
    units       bigint      NOT NULL CHECK (units >= 0),
    revision    bigint      NOT NULL,
    update_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, sku, channel)
);
