-- A reservation's holds live in its own row (three parallel arrays: SKU,
-- node, units) instead of a row each in `holds`: a new reservation costs
-- Postgres one row and its index entries fewer (the hot-SKU path writes
-- hundreds per commit), and a change rewrites one row instead of deleting
-- and inserting holds. `holds` stays as a view with the same columns for
-- whoever reads holds by SQL (Reconcile, the rebuild, tests, oms-bench).
-- Replicas of the earlier release fail to write into the view: they
-- refuse reservations (UNAVAILABLE, retried by callers) until replaced,
-- rather than write holds this release would not see.
ALTER TABLE reservations
    ADD COLUMN hold_skus  text[]   NOT NULL DEFAULT '{}',
    ADD COLUMN hold_nodes text[]   NOT NULL DEFAULT '{}',
    ADD COLUMN hold_units bigint[] NOT NULL DEFAULT '{}';

UPDATE reservations r
SET (hold_skus, hold_nodes, hold_units) = (
    SELECT array_agg(h.sku ORDER BY h.sku, h.node_id),
           array_agg(h.node_id ORDER BY h.sku, h.node_id),
           array_agg(h.held ORDER BY h.sku, h.node_id)
    FROM holds h WHERE h.tenant = r.tenant AND h.reservation_id = r.reservation_id)
WHERE EXISTS (SELECT 1 FROM holds h WHERE h.tenant = r.tenant AND h.reservation_id = r.reservation_id);

ALTER TABLE reservations ADD CONSTRAINT reservations_holds_valid CHECK (
    cardinality(hold_skus) = cardinality(hold_units)
    AND cardinality(hold_nodes) = cardinality(hold_units)
    AND 0 <= ALL (hold_units));

DROP TABLE holds;

CREATE VIEW holds AS
SELECT r.tenant, r.reservation_id, h.sku, h.node_id, h.held
FROM reservations r
CROSS JOIN LATERAL UNNEST(r.hold_skus, r.hold_nodes, r.hold_units) AS h(sku, node_id, held);
