-- What inventory was last told the orders waiting for stock ask for, per
-- tenant, SKU and channel (the view stock_demand summed): the demand
-- publisher sends inventory only what differs from it (see
-- workers::demand_publisher), each time under a new revision.
CREATE TABLE published_demand (
    tenant  text   NOT NULL,
    sku     text   NOT NULL,
    channel text   NOT NULL,
    units   bigint NOT NULL,
    PRIMARY KEY (tenant, sku, channel)
);
CREATE SEQUENCE published_demand_revision;

-- Any change of the waits (written, woken, dropped with their step or
-- order) tells the publishers on every replica at once, at commit; their
-- periodic look is only the backstop.
CREATE FUNCTION stock_waits_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stock_demand', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER stock_waits_changed AFTER INSERT OR UPDATE OR DELETE ON stock_waits
    FOR EACH STATEMENT EXECUTE FUNCTION stock_waits_changed();
