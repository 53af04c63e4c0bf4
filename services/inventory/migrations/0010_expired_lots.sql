-- A lot is promised until its withdraw date (its expiry date less its
-- item's minimum shelf life) has come at its node, in the node's time
-- zone. `withdraw_date` is kept with the lot (movements set it, and an
-- item's new minimum shelf life restates its lots), and `expired` says
-- that the gate and the availability figures leave its units out. The
-- sweep sets `expired` when the date comes, through the partial index
-- below (only lots with a date, not yet expired, are in it). Stock not
-- kept per lot (lot '') has no withdraw date: its one row keeps only the
-- last date a movement reported. Existing lots withdraw on their expiry
-- date (no item has a minimum shelf life yet); on the first start with these columns the sweep finds the lots
-- already past their date and takes them out of availability.
ALTER TABLE stock ADD COLUMN IF NOT EXISTS expired boolean NOT NULL DEFAULT false;
ALTER TABLE stock ADD COLUMN IF NOT EXISTS withdraw_date text NOT NULL DEFAULT '';
UPDATE stock SET withdraw_date = expiry_date WHERE expiry_date <> '' AND lot <> '';
CREATE INDEX IF NOT EXISTS stock_withdrawing ON stock (withdraw_date)
    WHERE NOT expired AND withdraw_date <> '';
