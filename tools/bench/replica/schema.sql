-- Tables of the reservation batch replica: the inventory schema's
-- reservations, holds and outbox as migrated, and the variants' tables.
CREATE TABLE reservations (
    tenant text NOT NULL, reservation_id text NOT NULL, state text NOT NULL, request_hash text NOT NULL,
    expire_time timestamptz NOT NULL, create_time timestamptz NOT NULL, update_time timestamptz NOT NULL,
    reference text NOT NULL DEFAULT '', consumed boolean NOT NULL DEFAULT false, doc bytea NOT NULL,
    PRIMARY KEY (tenant, reservation_id));
CREATE INDEX reservations_expiring ON reservations (expire_time) WHERE state = 'active';
CREATE INDEX reservations_by_time ON reservations (tenant, create_time DESC, reservation_id DESC);
CREATE TABLE holds (tenant text NOT NULL, reservation_id text NOT NULL, sku text NOT NULL, node_id text NOT NULL,
    held bigint NOT NULL CHECK (held >= 0), PRIMARY KEY (tenant, reservation_id, sku, node_id));
CREATE INDEX holds_by_sku ON holds (tenant, sku);
CREATE TABLE outbox (id bigserial PRIMARY KEY, txid xid8 NOT NULL DEFAULT pg_current_xact_id(), tenant text NOT NULL,
    event_id uuid NOT NULL, event_type text NOT NULL, subject text NOT NULL, request_id text NOT NULL DEFAULT '',
    traceparent text NOT NULL DEFAULT '', tracestate text NOT NULL DEFAULT '', payload bytea NOT NULL,
    occur_time timestamptz NOT NULL DEFAULT now());
CREATE INDEX outbox_feed ON outbox (tenant, txid, id);
-- slim
CREATE TABLE res2 (
    tenant text NOT NULL, reservation_id text NOT NULL, state text NOT NULL, request_hash text NOT NULL,
    expire_time timestamptz NOT NULL, create_time timestamptz NOT NULL, update_time timestamptz NOT NULL,
    reference text NOT NULL DEFAULT '', consumed boolean NOT NULL DEFAULT false, holder bigint NOT NULL, doc bytea NOT NULL,
    PRIMARY KEY (tenant, reservation_id));
CREATE TABLE holds2 (tenant text NOT NULL, holder bigint NOT NULL, sku text NOT NULL, node_id text NOT NULL,
    held bigint NOT NULL, PRIMARY KEY (tenant, holder, sku, node_id));
CREATE INDEX holds2_by_sku ON holds2 (tenant, sku);
CREATE SEQUENCE batches;
-- one row per batch (log-row-per-batch.sql)
CREATE TABLE blog (tenant text, batch bigint, ids text[], docs bytea, PRIMARY KEY (tenant, batch));
