-- The waits that are demand for stock: units a step still to run asks of
-- the network (not a deferred plan's 0: its units are held already), of
-- an order not cancelled. ListBackorderDemand sums them per SKU,
-- ListBackorderQueue lists them per order in turn: one definition.
CREATE VIEW stock_demand AS
SELECT w.tenant, w.order_id, w.step, w.sku, w.wanted, w.since, w.channel
FROM stock_waits w
JOIN saga_steps s USING (tenant, order_id, step)
JOIN orders o USING (tenant, order_id)
WHERE w.wanted > 0 AND s.next_attempt_time <> 'infinity' AND o.state <> 'cancelled';
