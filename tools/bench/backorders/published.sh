#!/usr/bin/env bash
# What channels were shown while backorders took the stock that came
# (README, Inventory, "backorders first"). Under `make up`: N one-unit
# orders of channels/web for a new SKU with no stock (8 at a time), then
# a receipt of N at DC1, watched on WatchAvailability in network and
# channel scope. Prints how soon inventory knew the demand, how soon the
# orders were reserved, and per feed the figures: (units before
# backorders, backordered, available published).
#   TOKEN=$(cargo run -q -p oms-cli -- token --tenant acme) N=200 bash tools/bench/backorders/published.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
N=${N:-200}
: "${TOKEN:?set TOKEN (README: Calling the API)}"
GRPCURL=${GRPCURL:-.oms/tools/venv/bin/grpcurl}
SKU=PUB-$(date +%s)
OUT=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }
call() { "$GRPCURL" -plaintext -H "authorization: Bearer $TOKEN" -d "$3" "127.0.0.1:$1" "$2"; }
inv() { call 50053 "oms.inventory.v1.InventoryService/$1" "$2"; }
figure() { inv GetAvailability '{"skus":["'"$SKU"'"]}' | python3 -c 'import json,sys; a=json.load(sys.stdin)["availabilities"][0]; print(a.get("backordered","0"), a.get("reserved","0"))'; }
now() { date +%s.%N; }
since() { python3 -c "print(round($(now) - $1, 2))"; }

inv CreateNode '{"request_id":"'"$(uuid)"'","node":{"node_id":"DC1","kind":"NODE_KIND_WAREHOUSE","enabled":true,"capabilities":{"ship":true}}}' >/dev/null 2>&1 || true
inv CreateItem '{"request_id":"'"$(uuid)"'","item":{"sku":"'"$SKU"'"}}' >/dev/null
export GRPCURL TOKEN SKU
seq 1 "$N" | xargs -P 8 -I{} bash -c '"$GRPCURL" -plaintext -H "authorization: Bearer $TOKEN" -d "{\"request_id\":\"$(python3 -c "import uuid; print(uuid.uuid4())")\",\"order\":{\"channel\":\"channels/web\",\"channel_order_id\":\"$SKU-{}\",\"currency_code\":\"EUR\",\"lines\":[{\"sku\":\"$SKU\",\"quantity\":1,\"unit_price\":{\"currency_code\":\"EUR\",\"amount_minor\":1250}}],\"ship_to\":{\"name\":\"Ada\",\"lines\":[\"12 St James Square\"],\"city\":\"London\",\"postal_code\":\"SW1Y 4JH\",\"country_code\":\"GB\"}}}" 127.0.0.1:50052 oms.orders.v1.OrderService/CreateOrder >/dev/null'
created=$(now)
until [ "$(figure)" = "$N 0" ]; do sleep 0.05; done
echo "demand of $N units known to inventory $(since "$created") s after the last CreateOrder returned"
cursor=$(inv GetAvailability '{"skus":["'"$SKU"'"]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["feedCursor"])')
for scope in NETWORK CHANNEL; do
  channel=""; [ $scope = CHANNEL ] && channel=',"channel":"channels/web"'
  inv WatchAvailability '{"after_cursor":"'"$cursor"'","skus":["'"$SKU"'"],"scope":"AVAILABILITY_SCOPE_'$scope'"'"$channel"'}' > "$OUT/$scope.json" 2>/dev/null &
done
sleep 1 # the watchers connect
received=$(now)
inv RecordMovement '{"request_id":"'"$(uuid)"'","movement":{"kind":"MOVEMENT_KIND_RECEIPT","node_id":"DC1","sku":"'"$SKU"'","quantity":'"$N"'}}' >/dev/null
until [ "$(figure)" = "0 $N" ]; do sleep 0.1; done
echo "all $N reserved, demand 0, $(since "$received") s after the receipt"
sleep 1 # the last figures reach the watchers
for scope in NETWORK CHANNEL; do
  python3 - "$OUT/$scope.json" "$scope" <<'PY'
import json, sys
text, figures, i = open(sys.argv[1]).read(), [], 0
decoder = json.JSONDecoder()
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    message, i = decoder.raw_decode(text, i)
    figures.append(message["availability"])
n = lambda f, k: int(f.get(k, "0"))
shown = [(n(f, "onHand") - n(f, "reserved"), n(f, "backordered"), n(f, "available")) for f in figures]
print(f"{sys.argv[2]}: {len(figures)} figures, most available published {max(s[2] for s in shown)}: {shown}")
PY
done
