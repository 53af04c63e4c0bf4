-- Changes one reservation: confirm, release, consume or extend;
-- or gives back a grant the Postgres record does not keep (giveback, with
-- the batch's token `w`).
-- KEYS[1] ready marker, KEYS[2] expiry zset, KEYS[3] reservation record,
-- KEYS[4..] avail keys, named per SKU in ARGV, the last key the writes
-- hash (common.lua's `open`; `wr` in ARGV and in the answer).
-- ARGV[1] JSON: { op, id, now, keep_ms, akeys = {sku = key}, entries = [ {sku, node, q} ],
--   expect = {s, holds} | nil: the reservation as the Postgres record has
--   it; a record here that differs is ahead of it (a change whose commit
--   never came, its replica dead) and nothing changes: DIVERGED,
--   limit = {pool, buf_pct, buf_qty, chan, bo} (extend: what it must leave,
--   as common.lua's shortfall reads it),
--   renew = ms | nil (extend: the active reservation's new expiry),
--   later = true: units released or expired are not given back here but
--   returned (`given`), with the gate's epoch, for the caller to give back
--   after its commit (adjust.lua with the epoch) }
-- Returns JSON { ready, status = OK|NOT_FOUND|DIVERGED|STATE|SHORT|TOO_MUCH|MISMATCH, state, holds, detail,
--   given = [ {sku, node, q} ], epoch }
local req = decode(ARGV[1])
if not open(req.wr) then return closed() end
local raw = redis.call('GET', KEYS[3])
if not raw then return answer({ready = true, status = 'NOT_FOUND'}) end
local r = decode(raw)
local akeys = req.akeys
local given = {}
local function give(sku, node, units)
  if req.later then table.insert(given, {sku = sku, node = node, q = units})
  else give_back(akeys[sku], node, units) end
end
local function done(status, detail)
  return answer({ready = true, status = status, state = r.s, holds = r.holds, consumed = r.c, detail = detail,
    given = given, epoch = redis.call('GET', KEYS[1])})
end
-- A grant the record does not keep goes back whole and is forgotten (a
-- retry is a new reservation), but only by the batch that owns it:
-- another batch may have found it since (EXISTS) and be recording it.
if req.op == 'giveback' then
  if r.w ~= req.w then return done('STATE') end
  restore(r.holds, akeys)
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[2], req.id)
  return answer({ready = true, status = 'OK', state = 'forgotten', holds = {}})
end
if req.expect and not as_recorded(r, req.expect) then return done('DIVERGED') end
-- A finished reservation's record is kept `keep_ms` (a repeat of its
-- CreateReservation finds it here), then dropped: past that the Postgres
-- record answers repeats, and Redis does not grow with every reservation
-- ever made.
local function finish(expiring)
  local clean = {}
  for k, v in pairs(r.holds) do if v > 0 then clean[k] = v end end
  r.holds = clean
  if total(clean) == 0 then
    if expiring then r.s = 'expired' elseif r.c == 1 then r.s = 'consumed' else r.s = 'released' end
    redis.call('ZREM', KEYS[2], req.id)
    redis.call('SET', KEYS[3], encode(r), 'PX', req.keep_ms)
  else
    redis.call('SET', KEYS[3], encode(r))
  end
end
-- An active reservation past its expiry is expired, whatever is asked.
if r.s == 'active' and tonumber(req.now) >= tonumber(r.e) then
  for k, v in pairs(r.holds) do
    if v > 0 then local sku, node = split(k); give(sku, node, v) end
  end
  r.holds = {}; finish(true)
  return done('STATE')
end

if req.op == 'confirm' then
  if r.s ~= 'active' then return done('STATE') end
  -- Allocations per SKU must cover exactly what is held, and a hold at a
  -- node must be allocated at that node.
  local alloc, sku_alloc, sku_held = {}, {}, {}
  for _, e in ipairs(req.entries) do
    local k = e.sku .. '\t' .. e.node
    alloc[k] = (alloc[k] or 0) + e.q
    sku_alloc[e.sku] = (sku_alloc[e.sku] or 0) + e.q
  end
  for k, v in pairs(r.holds) do
    local sku, node = split(k)
    sku_held[sku] = (sku_held[sku] or 0) + v
    if node ~= '' and (alloc[k] or 0) < v then return done('MISMATCH', {sku = sku, node = node, held = v, want = alloc[k] or 0}) end
  end
  for sku, v in pairs(sku_held) do if (sku_alloc[sku] or 0) ~= v then return done('MISMATCH', {sku = sku, held = v, want = sku_alloc[sku] or 0}) end end
  for sku, v in pairs(sku_alloc) do if (sku_held[sku] or 0) ~= v then return done('MISMATCH', {sku = sku, held = sku_held[sku] or 0, want = v}) end end
  -- Units beyond a node's own hold move from the network hold to the node:
  -- the node must be able to promise them.
  local moves = {}
  for k, v in pairs(alloc) do
    local x = v - (r.holds[k] or 0)
    if x > 0 then
      local sku, node = split(k)
      local have = field(akeys[sku], nodefield(node))
      if have < x then return done('SHORT', {{sku = sku, node = node, have = have, want = x}}) end
      moves[k] = x
    end
  end
  for k, x in pairs(moves) do
    local sku, node = split(k)
    redis.call('HINCRBY', akeys[sku], nodefield(node), -x)
    redis.call('HINCRBY', akeys[sku], 'nh', -x)
  end
  r.holds = alloc; r.s = 'confirmed'
  redis.call('ZREM', KEYS[2], req.id)
  finish(false); return done('OK')

elseif req.op == 'release' or req.op == 'consume' then
  if req.op == 'consume' and r.s ~= 'confirmed' then return done('STATE') end
  if r.s ~= 'active' and r.s ~= 'confirmed' then return done('STATE') end
  local entries = req.entries
  if #entries == 0 and req.op == 'release' then
    for k, v in pairs(r.holds) do local sku, node = split(k); table.insert(entries, {sku = sku, node = node, q = v}) end
  end
  -- Check everything first: nothing changes unless every entry fits.
  local left, take = {}, {}
  for k, v in pairs(r.holds) do left[k] = v end
  for _, e in ipairs(entries) do
    local want = e.q
    local keys
    if e.node ~= '' then keys = {e.sku .. '\t' .. e.node}
    else
      -- Without a node: the network hold first, then any node's.
      keys = {e.sku .. '\t'}
      for k, _ in pairs(left) do local s, n = split(k); if s == e.sku and n ~= '' then table.insert(keys, k) end end
    end
    for _, k in ipairs(keys) do
      local h = left[k] or 0
      local t = math.min(h, want)
      if t > 0 then left[k] = h - t; take[k] = (take[k] or 0) + t; want = want - t end
    end
    if want > 0 then return done('TOO_MUCH', {sku = e.sku, node = e.node, held = e.q - want, want = e.q}) end
  end
  if req.op == 'release' then
    for k, t in pairs(take) do local sku, node = split(k); give(sku, node, t) end
  else
    r.c = 1
  end
  r.holds = left
  finish(false); return done('OK', take)

elseif req.op == 'extend' then
  -- More units, all or none, checked as a new reservation is. A confirmed
  -- reservation's entries name nodes (checked by the caller): they are
  -- allocations from the start.
  if r.s ~= 'active' and r.s ~= 'confirmed' then return done('STATE') end
  local t = tally(req.entries)
  local v = view()
  local short = shortfall(v, akeys, t, req.limit)
  if #short > 0 then return done('SHORT', short) end
  if req.renew and r.s ~= 'active' then return done('STATE') end
  for hk, q in pairs(t.holds) do
    local sku, node = split(hk)
    take_hold(v, akeys[sku], node, q)
    r.holds[hk] = (r.holds[hk] or 0) + q
  end
  v.flush()
  if req.renew then
    r.e = req.renew
    redis.call('ZADD', KEYS[2], req.renew, req.id)
  end
  finish(false); return done('OK', t.holds)
end
return done('STATE', 'unknown op')
