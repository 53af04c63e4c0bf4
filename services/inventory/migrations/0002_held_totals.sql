-- Units held per tenant, SKU and node, kept beside the holds of each
-- reservation so that availability reads a few rows instead of summing a
-- hot SKU's every live hold (hundreds of thousands in a drop: ~60 ms a
-- read). Each total is spread over shards: a transaction adds its change
-- to one shard, so concurrent writers rarely wait for one row (the hot-row
-- lock the gate exists to avoid). held_totals = SUM(holds) per (tenant,
-- sku, node_id) at every commit; Reconcile recomputes it.
CREATE TABLE held_totals (
    tenant   text     NOT NULL,
    sku      text     NOT NULL,
    node_id  text     NOT NULL,
    shard    smallint NOT NULL,
    held     bigint   NOT NULL,
    PRIMARY KEY (tenant, sku, node_id, shard)
);

INSERT INTO held_totals (tenant, sku, node_id, shard, held)
SELECT tenant, sku, node_id, 0, SUM(held) FROM holds GROUP BY tenant, sku, node_id;
