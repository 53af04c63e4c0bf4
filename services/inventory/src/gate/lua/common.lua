-- Shared by every gate script. Keys of one tenant share the hash tag
-- {tenant}, so one script may touch all of them on Redis Cluster too.
--
-- avail hash per SKU:
--   n:<node> = on-hand - safety stock - held at that enabled node (may be < 0)
--   nh       = units held anywhere in the network, not yet at a node
-- Network promisable = sum over nodes of max(0, n:<node>) - nh.
-- reservation record (JSON string): s = state, h = request hash,
--   e = expiry (ms), c = 1 once anything was consumed,
--   holds = { "<sku>\t<node>" = units } (node '' = anywhere, before confirm).
local function decode(raw) return cjson.decode(raw) end
local function encode(v) return cjson.encode(v) end
local function split(k) local i = string.find(k, '\t', 1, true); return string.sub(k, 1, i - 1), string.sub(k, i + 1) end
local function field(akey, f) return tonumber(redis.call('HGET', akey, f) or '0') end
local function nodefield(node) return 'n:' .. node end
local function total(holds) local n = 0; for _, v in pairs(holds) do n = n + v end; return n end
-- Promisable units of a SKU across `nodes` (nil: every node).
local function promisable(akey, nodes)
  local flat = redis.call('HGETALL', akey)
  local sum, nh = 0, 0
  local want = nil
  if nodes and #nodes > 0 then want = {}; for _, n in ipairs(nodes) do want['n:' .. n] = true end end
  for i = 1, #flat, 2 do
    local f, v = flat[i], tonumber(flat[i + 1])
    if f == 'nh' then nh = v
    elseif string.sub(f, 1, 2) == 'n:' and v > 0 and (want == nil or want[f]) then sum = sum + v end
  end
  return sum - nh
end
-- Take units into a hold: at a node, or anywhere in the network.
local function take_hold(akey, node, units)
  if node == '' then redis.call('HINCRBY', akey, 'nh', units)
  else redis.call('HINCRBY', akey, nodefield(node), -units) end
end
-- Sums `lines` ({sku, node, q}) per SKU and per SKU and node, in first-seen
-- SKU order, and as holds ("<sku>\t<node>" = units).
local function tally(lines)
  local per_sku, at_node, skus, holds = {}, {}, {}, {}
  for _, l in ipairs(lines) do
    if not per_sku[l.sku] then per_sku[l.sku] = 0; at_node[l.sku] = {}; table.insert(skus, l.sku) end
    per_sku[l.sku] = per_sku[l.sku] + l.q
    if l.node ~= '' then at_node[l.sku][l.node] = (at_node[l.sku][l.node] or 0) + l.q end
    local hk = l.sku .. '\t' .. l.node
    holds[hk] = (holds[hk] or 0) + l.q
  end
  return {per_sku = per_sku, at_node = at_node, skus = skus, holds = holds}
end
-- What the network, a channel's pool and buffer (`limit`: {pool, buf_pct,
-- buf_qty} or nil) and each named node cannot give of a tally: a list of
-- {sku, node, have, want, channel?}; empty when everything fits.
local function shortfall(akeys, t, limit)
  local short = {}
  for _, sku in ipairs(t.skus) do
    local akey, want = akeys[sku], t.per_sku[sku]
    local have = promisable(akey, nil)
    if have < want then table.insert(short, {sku = sku, node = '', have = have, want = want}) end
    if limit and limit.pool then
      local p = promisable(akey, limit.pool)
      if p < 0 then p = 0 end
      local held_back = limit.buf_qty
      if limit.buf_pct > 0 then held_back = math.floor(p * limit.buf_pct / 100) end
      local chan = p - held_back
      if chan < want then table.insert(short, {sku = sku, node = '', have = math.max(chan, 0), want = want, channel = true}) end
    end
    for node, q in pairs(t.at_node[sku]) do
      local h = field(akey, nodefield(node))
      if h < q then table.insert(short, {sku = sku, node = node, have = h, want = q}) end
    end
  end
  return short
end
-- Give held units back to the gate.
local function give_back(akey, node, units)
  if node == '' then redis.call('HINCRBY', akey, 'nh', -units)
  else redis.call('HINCRBY', akey, nodefield(node), units) end
end
local function restore(holds, akeys)
  for k, v in pairs(holds) do
    if v > 0 then local sku, node = split(k); give_back(akeys[sku], node, v) end
  end
end
