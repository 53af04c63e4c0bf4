-- Every movement that moved a serial-tracked unit, by serial number: the
-- unit's history (ListMovements by serial_number), from its receipt to
-- its shipment and back. Written with the movement.
CREATE TABLE IF NOT EXISTS serial_movements (
    tenant          text        NOT NULL,
    serial          text        NOT NULL,
    sku             text        NOT NULL,
    movement_id     uuid        NOT NULL,
    PRIMARY KEY (tenant, serial, sku, movement_id)
);
