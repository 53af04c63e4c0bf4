-- Tables every service has in its own schema, managed by oms-runtime.
-- Idempotent DDL: each start applies it under an advisory lock.

-- One row per (tenant, request_id): the first response of a mutating call.
CREATE TABLE IF NOT EXISTS idempotency (
    tenant       text        NOT NULL,
    request_id   text        NOT NULL,
    method       text        NOT NULL,
    request_hash bytea       NOT NULL,
    response     bytea,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, request_id)
);
-- What the retention deletes is found by age: rows arrive in time order,
-- so a block-range index finds old ones for almost nothing per insert.
CREATE INDEX IF NOT EXISTS idempotency_age ON idempotency USING brin (create_time);

-- Events written in the same transaction as the change that caused them.
-- txid orders the feed safely: a reader only returns rows of transactions
-- older than every transaction still in flight, so a slow commit can never
-- slip in behind a cursor.
CREATE TABLE IF NOT EXISTS outbox (
    id          bigserial   PRIMARY KEY,
    txid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    tenant      text        NOT NULL,
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    subject     text        NOT NULL,
    request_id  text        NOT NULL DEFAULT '',
    traceparent text        NOT NULL DEFAULT '',
    tracestate  text        NOT NULL DEFAULT '',
    payload     bytea       NOT NULL,
    occur_time  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_feed ON outbox (tenant, txid, id);
-- Per tenant, the last event (in feed order) the retention deleted: a
-- reader whose cursor lies before it has missed events and is told so
-- instead of silently skipping them.
CREATE TABLE IF NOT EXISTS outbox_horizon (
    tenant      text        PRIMARY KEY,
    txid        xid8        NOT NULL,
    id          bigint      NOT NULL
);
-- event_id is a UUIDv7 made by the writer and never looked up here: a
-- unique index on it cost every event an index insertion for nothing
-- (about 8 % of a reservation batch's Postgres time, pgbench, 2026-12-01).
-- Dropped only where it still exists: ALTER TABLE locks the outbox even
-- when there is nothing to drop, and every start runs this file.
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_constraint
             WHERE conname = 'outbox_event_id_key' AND conrelid = 'outbox'::regclass) THEN
    ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_key;
  END IF;
END $$;
