-- Applies changes of a SKU's figures: a node's promisable stock
-- (movements, safety stock), the network hold, backorder demand.
-- KEYS[1] ready marker, KEYS[2..] avail keys.
-- ARGV[1] JSON: { changes = [ {akey, f, delta, init} ], epoch }: a
-- field seen for the first time starts at `init` (minus the safety
-- stock). With `epoch` (the ready marker's value when the change was
-- recorded), nothing is applied if the gate was rebuilt since: the
-- rebuild read the change from the record already.
if redis.call('EXISTS', KEYS[1]) == 0 then return encode({ready = false}) end
local req = decode(ARGV[1])
if req.epoch and redis.call('GET', KEYS[1]) ~= req.epoch then
  return encode({ready = true, applied = false})
end
for _, c in ipairs(req.changes) do
  local f = c.f
  if redis.call('HEXISTS', c.akey, f) == 0 then redis.call('HSET', c.akey, f, c.init) end
  if c.delta ~= 0 then redis.call('HINCRBY', c.akey, f, c.delta) end
end
return encode({ready = true, applied = true})
