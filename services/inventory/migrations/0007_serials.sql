-- Where each serial number of a serial-tracked item is, by the ledger: on
-- hand at a node, or gone (node_id NULL) once shipped, damaged, adjusted
-- or counted out. Kept by the movements that carry serial numbers, in
-- their transaction: a unit cannot arrive twice or leave from where it is
-- not.
CREATE TABLE IF NOT EXISTS serials (
    tenant          text        NOT NULL,
    sku             text        NOT NULL,
    serial          text        NOT NULL,
    node_id         text,
    lot             text        NOT NULL DEFAULT '',
    movement_id     uuid        NOT NULL,
    update_time     timestamptz NOT NULL,
    PRIMARY KEY (tenant, sku, serial)
);
CREATE INDEX IF NOT EXISTS serials_on_hand ON serials (tenant, node_id, sku, lot)
    WHERE node_id IS NOT NULL;
