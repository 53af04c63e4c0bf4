-- Orders are created before any node is chosen for them: the node index
-- holds only orders with nodes, so creating an order adds no GIN entry.
-- (A query by node says `node_ids <> '{}'` so that the planner uses it.)
DROP INDEX orders_by_node;
CREATE INDEX orders_by_node ON orders USING gin (node_ids) WHERE node_ids <> '{}';
