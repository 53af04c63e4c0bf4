-- Holds and the event per batch: only the reservation rows are per reservation.
BEGIN;
WITH b AS (SELECT nextval('batches') holder), ids AS (SELECT 'c' || md5(random()::text) id FROM generate_series(1,128)),
r AS (INSERT INTO res2 (tenant, reservation_id, state, request_hash, expire_time, create_time, update_time, reference, holder, doc)
  SELECT 'bench', id, 'active', 'abcdefabcdefabcdefabcdef', now() + interval '15 min', now(), now(), '', (SELECT holder FROM b), '\x0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f'::bytea FROM ids ON CONFLICT DO NOTHING RETURNING reservation_id),
h AS (INSERT INTO holds2 SELECT 'bench', (SELECT holder FROM b), 'HOT', '', count(*) FROM r)
SELECT count(*) FROM r;
INSERT INTO outbox (tenant, event_id, event_type, subject, payload) SELECT 'bench', gen_random_uuid(), 'StockReservedBatch', 'reservations', repeat('x', 128*60)::bytea;
COMMIT;
