-- Rule sets are versioned per tenant; at most one is active. Activations
-- form a stack so that a rollback returns to the rule set live before.
CREATE TABLE rule_sets (
    tenant          text        NOT NULL,
    rule_set_id     uuid        NOT NULL,
    version         bigint      NOT NULL,
    state           text        NOT NULL,          -- draft | active | superseded
    doc             bytea       NOT NULL,          -- oms.routing.v1.RuleSet
    create_time     timestamptz NOT NULL,
    PRIMARY KEY (tenant, rule_set_id),
    UNIQUE (tenant, version)
);
CREATE UNIQUE INDEX rule_sets_one_active ON rule_sets (tenant) WHERE state = 'active';

CREATE TABLE activations (
    seq             bigserial   PRIMARY KEY,
    tenant          text        NOT NULL,
    rule_set_id     uuid        NOT NULL,
    activate_time   timestamptz NOT NULL,
    rolled_back     boolean     NOT NULL DEFAULT false
);
CREATE INDEX activations_tenant ON activations (tenant, seq DESC) WHERE NOT rolled_back;

-- Every stored decision with the order as planned (simulations replay it).
CREATE TABLE decisions (
    tenant          text        NOT NULL,
    decision_id     uuid        NOT NULL,
    order_name      text        NOT NULL,
    kind            text        NOT NULL,          -- plan | reroute
    doc             bytea       NOT NULL,          -- oms.routing.v1.Decision
    input           bytea       NOT NULL,          -- oms.routing.v1.RoutingOrder
    create_time     timestamptz NOT NULL,
    PRIMARY KEY (tenant, decision_id)
);
CREATE INDEX decisions_order ON decisions (tenant, order_name, decision_id DESC);

-- Shipments planned per node and local day, against its daily capacity.
-- Nodes are physical and may be shared by tenants, so load is not per tenant.
CREATE TABLE node_load (
    node_id         text        NOT NULL,
    day             date        NOT NULL,
    shipments       bigint      NOT NULL,
    PRIMARY KEY (node_id, day)
);

-- A node's lowered standing for a SKU after it rejected or short-picked.
CREATE TABLE penalties (
    tenant          text        NOT NULL,
    node_id         text        NOT NULL,
    sku             text        NOT NULL,
    until_time      timestamptz NOT NULL,
    reason          text        NOT NULL,
    PRIMARY KEY (tenant, node_id, sku)
);
