-- The node-days each decision counts in node_load, so that giving a
-- decision's capacity back (ReleaseDecision, a reroute away from a node)
-- takes off exactly what it added, once.
CREATE TABLE decision_load (
    tenant          text        NOT NULL,
    decision_id     uuid        NOT NULL,
    order_name      text        NOT NULL,
    node_id         text        NOT NULL,
    day             date        NOT NULL,
    released        boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (tenant, decision_id, node_id)
);
CREATE INDEX decision_load_order ON decision_load (tenant, order_name, node_id) WHERE NOT released;
