-- Each writer of backorder demand keeps its own figures and revisions
-- (the orders service is 'orders'; an ERP that keeps orders of its own
-- waiting is another): one cannot set back or overwrite another's, and
-- published availability keeps the sum.
ALTER TABLE backorder_demand ADD COLUMN source text NOT NULL DEFAULT 'orders';
ALTER TABLE backorder_demand ALTER COLUMN source DROP DEFAULT;
ALTER TABLE backorder_demand DROP CONSTRAINT backorder_demand_pkey;
ALTER TABLE backorder_demand ADD PRIMARY KEY (tenant, sku, channel, source);
