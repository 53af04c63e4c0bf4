-- The waiting order's sales channel (`channels/{id}`), whose share of the
-- stock must cover it too, not only the network's; empty: none.
ALTER TABLE stock_waits ADD COLUMN channel text NOT NULL DEFAULT '';
