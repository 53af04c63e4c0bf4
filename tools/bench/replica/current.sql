-- What the writer sent per batch on 2026-12-02 before held_totals and the drop of holds_by_sku: reservations and their holds in one statement, then the outbox events.
BEGIN;
WITH ids AS (SELECT 'c' || md5(random()::text) id FROM generate_series(1,128)),
r AS (INSERT INTO reservations (tenant, reservation_id, state, request_hash, expire_time, create_time, update_time, reference, doc)
  SELECT 'bench', id, 'active', 'abcdefabcdefabcdefabcdef', now() + interval '15 min', now(), now(), '', '\x0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f'::bytea FROM ids ON CONFLICT DO NOTHING RETURNING reservation_id),
h AS (INSERT INTO holds SELECT 'bench', reservation_id, 'HOT', '', 1 FROM r ON CONFLICT DO NOTHING)
SELECT count(*) FROM r;
INSERT INTO outbox (tenant, event_id, event_type, subject, payload) SELECT 'bench', gen_random_uuid(), 'StockReserved', 'reservations/x' || g, '\x0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f0a0b0c0d0e0f'::bytea FROM generate_series(1,128) g;
COMMIT;
