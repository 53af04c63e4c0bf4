-- Checks, changing nothing else, that the gate still has every change its
-- writer was answered (common.lua's `behind`); drops the gate when not.
-- Run by the sweep for a writer that may make no more changes.
-- KEYS[1] ready marker, KEYS[2] writes hash; ARGV[1] JSON { wr }.
-- Returns 1 when it dropped the gate, else 0.
local wr = decode(ARGV[1]).wr
local ep = redis.call('GET', KEYS[1])
if not ep then return 0 end
local n = tonumber(redis.call('HGET', KEYS[2], wr.id) or '0')
if behind(wr, ep, n) then redis.call('DEL', KEYS[1]); return 1 end
return 0
