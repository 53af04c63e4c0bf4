-- Sales channels of each tenant. The webhook secret stays here; the
-- document (oms.ingest.v1.Channel) never carries it.
CREATE TABLE channels (
    tenant          text        NOT NULL,
    channel_id      text        NOT NULL,
    webhook_secret  text        NOT NULL DEFAULT '',
    doc             bytea       NOT NULL,
    PRIMARY KEY (tenant, channel_id)
);

-- Every payload received, accepted or not: the audit log.
CREATE TABLE payloads (
    payload_id       uuid        PRIMARY KEY,
    tenant           text        NOT NULL,
    channel_id       text        NOT NULL,
    status           text        NOT NULL,
    body_hash        text        NOT NULL,
    channel_order_id text        NOT NULL DEFAULT '',
    receive_time     timestamptz NOT NULL,
    doc              bytea       NOT NULL          -- oms.ingest.v1.Payload
);
CREATE INDEX payloads_by_time ON payloads (tenant, receive_time DESC, payload_id DESC);

-- Which order each channel order became, and the last body seen for it:
-- a webhook delivered twice is recognised here.
CREATE TABLE channel_orders (
    tenant           text        NOT NULL,
    channel_id       text        NOT NULL,
    channel_order_id text        NOT NULL,
    order_name       text        NOT NULL,
    last_body_hash   text        NOT NULL,
    cancelled        boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (tenant, channel_id, channel_order_id)
);
