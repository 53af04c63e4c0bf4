#!/usr/bin/env bash
# The reservation gate's reserve script alone, at a git revision and as
# the working tree has it: batches of 128 one-unit reservations of one SKU
# (the hot-SKU shape, as the batch writer sends them) on a scratch
# redis-server, the two alternating ROUNDS times; prints Redis's own time
# per call (INFO commandstats), median per variant, without and with two
# backorder demand fields on the SKU. Measures a change to the Lua without
# the service, Postgres or gRPC around it.
#   bash tools/bench/gate/ab.sh [rev, default HEAD] [rounds, default 5]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
rev=${1:-HEAD}; rounds=${2:-5}
port=${GATE_BENCH_PORT:-6399}
work=$(mktemp -d /tmp/oms-gate-ab.XXXXXX)
lua=services/inventory/src/gate/lua
(git -C "$repo" show "$rev:$lua/common.lua"; echo; git -C "$repo" show "$rev:$lua/reserve.lua") > "$work/rev.lua"
(cat "$repo/$lua/common.lua"; echo; cat "$repo/$lua/reserve.lua") > "$work/tree.lua"
if redis-cli -p "$port" PING >/dev/null 2>&1; then
  echo "port $port is taken (set GATE_BENCH_PORT)" >&2; exit 1
fi
redis-server --port "$port" --save '' --appendonly no --daemonize yes \
  --dir "$work" >/dev/null
trap 'redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
R=(redis-cli -p "$port")
until "${R[@]}" PING >/dev/null 2>&1; do sleep 0.1; done
calls() { # sha tag: 400 EVALSHA calls as RESP, each a batch of 128
  python3 - "$@" <<'PY'
import json, sys
sha, tag = sys.argv[1], sys.argv[2]
akey = "{t}avail:S"
out = []
def resp(*args):
    out.append(f"*{len(args)}\r\n")
    for a in args:
        out.append(f"${len(str(a).encode())}\r\n{a}\r\n")
for i in range(400):
    ids = [f"{tag}-{i}-{j}" for j in range(128)]
    items = [{"id": r, "h": "x", "e": 9999999999999, "lines": [{"sku": "S", "node": "", "q": 1}],
              "chan": "", "bo": ""} for r in ids]
    # The writes hash last, and the writer's count: a revision from
    # before 2026-12-05 19:00 ignores both.
    keys = ["{t}ready", "{t}expiry"] + ["{t}r:" + r for r in ids] + [akey, "{t}writes"]
    wr = {"id": "ab", "ep": "x", "n": i}
    resp("EVALSHA", sha, len(keys), *keys, json.dumps({"w": "ab", "akeys": {"S": akey}, "items": items, "wr": wr}))
sys.stdout.write("".join(out))
PY
}
results=$work/results
for demand in 0 2; do
  for r in $(seq "$rounds"); do
    for v in rev tree; do
      "${R[@]}" FLUSHALL >/dev/null
      "${R[@]}" CONFIG RESETSTAT >/dev/null
      "${R[@]}" SET '{t}ready' x >/dev/null
      "${R[@]}" HSET '{t}avail:S' n:DC1 1000000000 nh 0 >/dev/null
      if [ "$demand" = 2 ]; then
        "${R[@]}" HSET '{t}avail:S' b:orders: 5 b:erp:channels/web 2 >/dev/null
      fi
      sha=$("${R[@]}" SCRIPT LOAD "$(cat "$work/$v.lua")")
      calls "$sha" "$v$r" | "${R[@]}" --pipe >/dev/null
      us=$("${R[@]}" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:.*usec_per_call=\([0-9.]*\).*/\1/p')
      echo "$demand $v $us" >> "$results"
    done
  done
done
python3 - "$results" "$rev" <<'PY'
import collections, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    demand, v, us = line.split()
    d[(int(demand), v)].append(float(us))
for (demand, v), xs in sorted(d.items()):
    xs.sort()
    m = xs[len(xs) // 2]
    name = sys.argv[2] if v == "rev" else "working tree"
    print(f"demand fields {demand}, {name:>12}: {m / 128:6.2f} us per reservation (median of {len(xs)}; "
          f"per batch of 128: {', '.join(str(round(x)) for x in xs)} us)")
PY
