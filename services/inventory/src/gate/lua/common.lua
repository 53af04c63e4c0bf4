-- Shared by every gate script. Keys of one tenant share the hash tag
-- {tenant}, so one script may touch all of them on Redis Cluster too.
--
-- avail hash per SKU:
--   n:<node> = on-hand - safety stock - held at that enabled node (may be < 0)
--   nh       = units held anywhere in the network, not yet at a node
--   b:<source>:<channel> = units the backorders of a source (sold in that
--              channel; '' = of no channel) ask for (SetBackorderDemand)
-- Network promisable = sum over nodes of max(0, n:<node>) - nh; a
-- reservation not for a source's backorders must leave theirs.
-- reservation record (JSON string): s = state, h = request hash,
--   e = expiry (ms), c = 1 once anything was consumed,
--   holds = { "<sku>\t<node>" = units } (node '' = anywhere, before confirm).
local function decode(raw) return cjson.decode(raw) end
local function encode(v) return cjson.encode(v) end
local function split(k) local i = string.find(k, '\t', 1, true); return string.sub(k, 1, i - 1), string.sub(k, i + 1) end
local function field(akey, f) return tonumber(redis.call('HGET', akey, f) or '0') end
local function nodefield(node) return 'n:' .. node end
local function total(holds) local n = 0; for _, v in pairs(holds) do n = n + v end; return n end
-- Changes this writer was answered are still here. Every script counts
-- its writer's (a service replica's) runs in the tenant's `writes` hash,
-- the script's last key, and answers the count with the gate's epoch
-- (`wr`); the writer sends back the highest count it was answered in that
-- epoch, and the epoch before it (`req.wr` = {id, ep, n, prev}). Redis
-- never answers a count twice, nor goes back to an epoch a rebuild ended,
-- so a count not above it in the same epoch, or the epoch before, means
-- Redis lost changes it had answered: a failover to a replica that
-- lagged, a restart from an older snapshot. Then the gate is dropped,
-- nothing is changed, and the caller rebuilds the gate from the record
-- before anything more is promised. `behind` says so, the gate being at
-- epoch `ep` and the writer's count `n` before this script; `open` counts
-- and checks, check.lua (the sweep's) only checks.
local function behind(wr, ep, n)
  return wr.prev == ep or (wr.ep == ep and wr.n ~= nil and n < wr.n)
end
local WROTE, LOST = nil, false
local function open(wr)
  local ep = redis.call('GET', KEYS[1])
  if not ep then return false end
  if wr then
    local n = redis.call('HINCRBY', KEYS[#KEYS], wr.id, 1)
    if behind(wr, ep, n - 1) then
      redis.call('DEL', KEYS[1])
      LOST = true
      return false
    end
    WROTE = {ep = ep, n = n}
  end
  return true
end
-- A script's answer once the gate is open, with the writer's count.
local function answer(t) t.wr = WROTE; return encode(t) end
-- The answer of a script that found the gate missing or dropped it.
local function closed() return encode({ready = false, lost = LOST}) end
-- A script's view of the avail hashes it touches: each is read once (the
-- first time it is asked about), takes change the view at once (so later
-- checks in the same script see them), and `flush`, called once at the
-- end, writes one HINCRBY per changed field. A batch of many reservations
-- of one hot SKU costs one HGETALL and one HINCRBY, not one of each per
-- reservation.
local function view()
  -- demand[akey]: the hash has backorder demand fields (most have none).
  local v = {hashes = {}, deltas = {}, demand = {}, kept = {}}
  function v.get(akey)
    local h = v.hashes[akey]
    if not h then
      h = {}
      local flat = redis.call('HGETALL', akey)
      for i = 1, #flat, 2 do
        h[flat[i]] = tonumber(flat[i + 1])
        if string.sub(flat[i], 1, 2) == 'b:' then v.demand[akey] = true end
      end
      v.hashes[akey] = h
      v.deltas[akey] = {}
    end
    return h
  end
  function v.add(akey, f, n)
    local h = v.get(akey)
    h[f] = (h[f] or 0) + n
    local d = v.deltas[akey]
    d[f] = (d[f] or 0) + n
  end
  function v.flush()
    for akey, d in pairs(v.deltas) do
      for f, n in pairs(d) do if n ~= 0 then redis.call('HINCRBY', akey, f, n) end end
    end
  end
  return v
end
-- Promisable units of a SKU across `nodes` (nil: every node).
local function promisable(v, akey, nodes)
  local h = v.get(akey)
  local sum = 0
  local want = nil
  if nodes and #nodes > 0 then want = {}; for _, n in ipairs(nodes) do want['n:' .. n] = true end end
  for f, n in pairs(h) do
    if n > 0 and string.sub(f, 1, 2) == 'n:' and (want == nil or want[f]) then sum = sum + n end
  end
  return sum - (h['nh'] or 0)
end
-- Take units into a hold: at a node, or anywhere in the network.
local function take_hold(v, akey, node, units)
  if node == '' then v.add(akey, 'nh', units)
  else v.add(akey, nodefield(node), -units) end
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
-- Units backorders ask for of a SKU that a reservation for the
-- backorders of `mine` ('' = none) must leave: every other source's, in
-- all and in `channel`'s share (its own and those of no channel).
-- Read once per SKU, source and channel in a script: a batch changes no
-- demand.
local function kept(v, akey, mine, channel)
  local h = v.get(akey)
  if not v.demand[akey] then return 0, 0 end
  local memo = akey .. '\0' .. mine .. '\0' .. channel
  local got = v.kept[memo]
  if got then return got[1], got[2] end
  local all, share = 0, 0
  for f, n in pairs(h) do
    -- (A field without its second ':' was not written by the service;
    -- Reconcile reports and drops it. It must not fail every reservation
    -- of the SKU meanwhile.)
    local i = n > 0 and string.sub(f, 1, 2) == 'b:' and string.find(f, ':', 3, true)
    if i then
      local c = string.sub(f, i + 1)
      if string.sub(f, 3, i - 1) ~= mine then
        all = all + n
        if c == '' or c == channel then share = share + n end
      end
    end
  end
  v.kept[memo] = {all, share}
  return all, share
end
-- What the network, a channel's pool and buffer, and each named node
-- cannot give of a tally, after the units kept for backorders: a list of
-- {sku, node, have, want, channel?, kept}; empty when everything fits.
-- `limit` (or nil: nothing to leave) is {pool, buf_pct, buf_qty} of the
-- channel's rule (no pool: none), `chan` its name, `bo` the backorder
-- source the reservation is for. Reads through the view `v`.
local function shortfall(v, akeys, t, limit)
  local short = {}
  limit = limit or {}
  for _, sku in ipairs(t.skus) do
    local akey, want = akeys[sku], t.per_sku[sku]
    local all, share = kept(v, akey, limit.bo or '', limit.chan or '')
    local have = promisable(v, akey, nil) - all
    if have < want then table.insert(short, {sku = sku, node = '', have = have, want = want, kept = all}) end
    if limit.pool then
      local p = promisable(v, akey, limit.pool)
      if p < 0 then p = 0 end
      local held_back = limit.buf_qty
      -- Rounded up (as availability.rs): a buffer that rounded down would
      -- hold nothing back of the last few units, where it matters most.
      if limit.buf_pct > 0 then held_back = math.floor((p * limit.buf_pct + 99) / 100) end
      local chan = p - held_back - share
      if chan < want then table.insert(short, {sku = sku, node = '', have = math.max(chan, 0), want = want, channel = true, kept = share}) end
    end
    for node, q in pairs(t.at_node[sku]) do
      local h = v.get(akey)[nodefield(node)] or 0
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
-- Whether a reservation's gate record `r` is as the Postgres record `e`
-- ({s, holds}) has it; one that differs is ahead of the record (a change
-- whose commit never came, its replica dead).
local function as_recorded(r, e)
  local function within(a, b)
    for k, v in pairs(a) do if v > 0 and (b[k] or 0) ~= v then return false end end
    return true
  end
  return r.s == e.s and within(r.holds, e.holds) and within(e.holds, r.holds)
end
