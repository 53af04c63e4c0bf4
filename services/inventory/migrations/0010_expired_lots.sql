-- A lot whose expiry date has come at its node (in the node's time zone)
-- is no longer promised: `expired` says the gate and the availability
-- figures leave its units out. Movements set it as they record the lot;
-- the sweep sets it when the date comes, through the partial index below
-- (only lots with a date not yet expired are in it). On the first start
-- with this column the sweep finds the lots already past their date and
-- takes them out of availability.
ALTER TABLE stock ADD COLUMN IF NOT EXISTS expired boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS stock_expiring ON stock (expiry_date)
    WHERE NOT expired AND expiry_date <> '';
