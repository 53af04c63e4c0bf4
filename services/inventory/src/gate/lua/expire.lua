-- Expires a batch of one tenant's reservations that the sweep found due
-- in the record, in one script (a flash sale's abandoned carts expire in
-- batches, not one script and transaction each).
-- KEYS[1] ready marker, KEYS[2] expiry zset, KEYS[2 + i] the record of
-- items[i], the last key the writes hash (common.lua's `open`). No avail
-- key: nothing is given back here.
-- ARGV[1] JSON: { now, keep_ms, items = [ {id, s, holds} ]: each as the
--   Postgres record has it, and due by `now` there }
-- Returns JSON { ready, status = OK|NOT_FOUND|DIVERGED, id (the first not
--   found or ahead of its record), expired = [id], given = [ {sku, node, q} ],
--   epoch }. Units expired are not given back here (as change.lua's
--   `later`): the caller gives them back after its commit.
-- Nothing changes unless the gate has every record as Postgres does: the
-- caller rebuilds the gate from the record first, as for change.lua.
local req = decode(ARGV[1])
if not open(req.wr) then return closed() end
local records = {}
for i, it in ipairs(req.items) do
  local raw = redis.call('GET', KEYS[2 + i])
  if not raw then return answer({ready = true, status = 'NOT_FOUND', id = it.id}) end
  local r = decode(raw)
  if not as_recorded(r, it) then return answer({ready = true, status = 'DIVERGED', id = it.id, state = r.s}) end
  records[i] = r
end
local expired, given = {}, {}
for i, it in ipairs(req.items) do
  local r = records[i]
  -- Due by `now` (the caller's: the database's, which found them due).
  if r.s == 'active' and tonumber(req.now) >= tonumber(r.e) then
    for k, v in pairs(r.holds) do
      if v > 0 then local sku, node = split(k); table.insert(given, {sku = sku, node = node, q = v}) end
    end
    r.holds = {}; r.s = 'expired'
    redis.call('ZREM', KEYS[2], it.id)
    redis.call('SET', KEYS[2 + i], encode(r), 'PX', req.keep_ms)
    table.insert(expired, it.id)
  end
end
return answer({ready = true, status = 'OK', expired = expired, given = given, epoch = redis.call('GET', KEYS[1])})
