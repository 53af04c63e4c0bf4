-- The state an order was in when it was put on hold (it returns there).
ALTER TABLE orders ADD COLUMN held_from text NOT NULL DEFAULT '';

-- The placement saga's durable work: one row per pending step of an order.
-- Workers claim due rows with FOR UPDATE SKIP LOCKED, so a crash or a
-- second replica neither loses a step nor runs it twice at once; steps are
-- idempotent in the services they call.
CREATE TABLE saga_steps (
    tenant            text        NOT NULL,
    order_id          uuid        NOT NULL,
    step              text        NOT NULL,      -- reserve | release
    payload           bytea       NOT NULL DEFAULT '\x',
    attempts          int         NOT NULL DEFAULT 0,
    next_attempt_time timestamptz NOT NULL DEFAULT now(),
    last_error        text        NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, order_id, step)
);
CREATE INDEX saga_steps_due ON saga_steps (next_attempt_time);
