-- Held units per SKU are read from held_totals now (availability, stock
-- levels, the tenants at a node); nothing looks holds up by SKU any more,
-- and the index cost every new reservation an entry.
DROP INDEX IF EXISTS holds_by_sku;
