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
    local per_sku, at_node, skus, holds = {}, {}, {}, {}
    for _, l in ipairs(it.lines) do
      if not per_sku[l.sku] then per_sku[l.sku] = 0; at_node[l.sku] = {}; table.insert(skus, l.sku) end
      per_sku[l.sku] = per_sku[l.sku] + l.q
      if l.node ~= '' then at_node[l.sku][l.node] = (at_node[l.sku][l.node] or 0) + l.q end
      local hk = l.sku .. '\t' .. l.node
      holds[hk] = (holds[hk] or 0) + l.q
    end
    local short = {}
    for _, sku in ipairs(skus) do
      local akey = it.akeys[sku]
      local have = promisable(akey, nil)
      if have < per_sku[sku] then table.insert(short, {sku = sku, node = '', have = have, want = per_sku[sku]}) end
      if it.pool then
        local p = promisable(akey, it.pool)
        if p < 0 then p = 0 end
        local held_back = it.buf_qty
        if it.buf_pct > 0 then held_back = math.floor(p * it.buf_pct / 100) end
        local chan = p - held_back
        if chan < per_sku[sku] then table.insert(short, {sku = sku, node = '', have = math.max(chan, 0), want = per_sku[sku], channel = true}) end
      end
      for node, q in pairs(at_node[sku]) do
        local h = field(akey, nodefield(node))
        if h < q then table.insert(short, {sku = sku, node = node, have = h, want = q}) end
      end
    end
    if #short > 0 then
      out[i] = {status = 'SHORT', short = short}
    else
      for hk, q in pairs(holds) do
        local sku, node = split(hk)
        if node == '' then redis.call('HINCRBY', it.akeys[sku], 'nh', q)
        else redis.call('HINCRBY', it.akeys[sku], nodefield(node), -q) end
      end
      redis.call('SET', it.rkey, encode({s = 'active', h = it.h, e = it.e, c = 0, holds = holds}))
      redis.call('ZADD', KEYS[2], it.e, it.id)
      out[i] = {status = 'OK', state = 'active'}
    end
  end
end
return encode({ready = true, results = out})
