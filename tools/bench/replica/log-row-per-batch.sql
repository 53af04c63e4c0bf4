-- No row per reservation: the batch as one log row, its holds and one event.
BEGIN;
INSERT INTO blog SELECT 'bench', nextval('batches'), array_agg('c' || md5(random()::text)), repeat('x', 128*100)::bytea FROM generate_series(1,128);
INSERT INTO holds2 SELECT 'bench', currval('batches'), 'HOT', '', 128;
INSERT INTO outbox (tenant, event_id, event_type, subject, payload) SELECT 'bench', gen_random_uuid(), 'StockReservedBatch', 'reservations', repeat('x', 128*60)::bytea;
COMMIT;
