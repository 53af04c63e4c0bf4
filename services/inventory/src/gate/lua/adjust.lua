-- Applies changes of a SKU's figures: a node's promisable stock
-- (movements, safety stock), the network hold, backorder demand.
-- KEYS[1] ready marker, KEYS[2..] avail keys, the last key the writes
-- hash (common.lua's `open`).
-- ARGV[1] JSON: { changes = [ {akey, f, delta, init} ], epoch }: a
-- field seen for the first time starts at `init` (minus the safety
-- stock). With `epoch` (the ready marker's value when the change was
-- recorded), nothing is applied if the gate was rebuilt since: the
-- rebuild read the change from the record already.
local req = decode(ARGV[1])
if not open(req.wr) then return closed() end
if req.epoch and redis.call('GET', KEYS[1]) ~= req.epoch then
  return answer({ready = true, applied = false})
end
for _, c in ipairs(req.changes) do
  local f = c.f
  if redis.call('HEXISTS', c.akey, f) == 0 then redis.call('HSET', c.akey, f, c.init) end
  if c.delta ~= 0 then redis.call('HINCRBY', c.akey, f, c.delta) end
end
return answer({ready = true, applied = true})
