-- Reserves a batch of reservations of one tenant; each is all-or-nothing.
-- KEYS[1] ready marker, KEYS[2] expiry zset, KEYS[2 + i] item i's record,
-- then every avail key of `akeys`, the last key the writes hash
-- (common.lua's `open`; `wr` in ARGV and in the answer).
-- ARGV[1] JSON: { w, akeys = {sku = key}, items = [ { id, h, e,
--   lines = [ {sku, node, q} ], pool = [node] | nil, buf_pct, buf_qty, chan, bo } ] }
--   (the item doubles as the limit common.lua's shortfall reads)
--   w: the writing batch's token. A record granted here, or found here
--   active (EXISTS), is owned by this batch from now on: only its owner
--   may give it back when its Postgres record fails (change.lua,
--   giveback).
-- Returns JSON { ready, results = [ {status = OK|EXISTS|CONFLICT|SHORT, state, short} ] }
-- Changes are written once at the end (one HINCRBY per changed field, one
-- MSET, one ZADD), whatever the batch's size (`unpack` takes a few
-- thousand values: the writer's batches are at most 256).
local req = decode(ARGV[1])
if not open(req.wr) then return closed() end
local akeys = req.akeys
local v = view()
local out, written, sets, expiries = {}, {}, {}, {}
for i, it in ipairs(req.items) do
  local rkey = KEYS[2 + i]
  -- A record written earlier in this batch (the same id twice) counts.
  local raw = written[rkey] or redis.call('GET', rkey)
  if raw then
    local r = decode(raw)
    if r.h ~= it.h then out[i] = {status = 'CONFLICT'}
    else
      out[i] = {status = 'EXISTS', state = r.s}
      -- Only an active grant can lack its Postgres record (its batch
      -- failed), so only that one is taken over. A finished record is left
      -- as it is: rewriting it would drop the expiry that bounds how long
      -- the gate keeps it.
      if r.s == 'active' and r.w ~= req.w then
        r.w = req.w
        local rec = encode(r)
        written[rkey] = rec
        table.insert(sets, rkey); table.insert(sets, rec)
      end
    end
  else
    local t = tally(it.lines)
    local short = shortfall(v, akeys, t, it)
    if #short > 0 then
      out[i] = {status = 'SHORT', short = short}
    else
      for hk, q in pairs(t.holds) do
        local sku, node = split(hk)
        take_hold(v, akeys[sku], node, q)
      end
      local rec = encode({s = 'active', h = it.h, e = it.e, c = 0, holds = t.holds, w = req.w})
      written[rkey] = rec
      table.insert(sets, rkey); table.insert(sets, rec)
      table.insert(expiries, it.e); table.insert(expiries, it.id)
      out[i] = {status = 'OK', state = 'active'}
    end
  end
end
v.flush()
if #sets > 0 then redis.call('MSET', unpack(sets)) end
if #expiries > 0 then redis.call('ZADD', KEYS[2], unpack(expiries)) end
return answer({ready = true, results = out})
