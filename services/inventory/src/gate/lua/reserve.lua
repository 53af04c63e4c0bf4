-- Reserves a batch of reservations of one tenant; each is all-or-nothing.
-- KEYS[1] ready marker, KEYS[2] expiry zset, KEYS[3..] every key ARGV names.
-- ARGV[1] JSON: { items = [ { id, rkey, h, e, akeys = {sku = key},
--   lines = [ {sku, node, q} ], pool = [node] | nil, buf_pct, buf_qty } ] }
-- Returns JSON { ready, results = [ {status = OK|EXISTS|CONFLICT|SHORT, state, short} ] }
if redis.call('EXISTS', KEYS[1]) == 0 then return encode({ready = false}) end
local req = decode(ARGV[1])
local out = {}
for i, it in ipairs(req.items) do
  local raw = redis.call('GET', it.rkey)
  if raw then
    local r = decode(raw)
    if r.h ~= it.h then out[i] = {status = 'CONFLICT'} else out[i] = {status = 'EXISTS', state = r.s} end
  else
    local t = tally(it.lines)
    local short = shortfall(it.akeys, t, it)
    if #short > 0 then
      out[i] = {status = 'SHORT', short = short}
    else
      for hk, q in pairs(t.holds) do
        local sku, node = split(hk)
        take_hold(it.akeys[sku], node, q)
      end
      redis.call('SET', it.rkey, encode({s = 'active', h = it.h, e = it.e, c = 0, holds = t.holds}))
      redis.call('ZADD', KEYS[2], it.e, it.id)
      out[i] = {status = 'OK', state = 'active'}
    end
  end
end
return encode({ready = true, results = out})
