#!/usr/bin/env bash
# `make up`: the whole suite on this machine. Ensures Postgres and Redis,
# builds, starts the eight services as separate processes with prefixed
# logs, prints where each listens and how to call one, and stops everything
# on Ctrl-C (or `make down` from another shell).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.oms
mkdir -p "$STATE"
PIDS="$STATE/pids"

if [ -s "$PIDS" ] && xargs -r kill -0 < "$PIDS" 2>/dev/null; then
  echo "The suite is already running (pids in $PIDS); run 'make down' first." >&2
  exit 1
fi

bash scripts/ensure-deps.sh
bash scripts/ensure-tools.sh --grpcurl || echo "(grpcurl could not be installed; the API still works)"

echo "building the services..."
cargo build --quiet --bins
BIN="${CARGO_TARGET_DIR:-target}/debug"

# TLS=1: mutual TLS as in production, with a local CA's certificates
# (scripts/dev-certs.sh); peers are then called over https://.
GRPCURL_TLS=(-plaintext)
SCHEME=http
if [ -n "${TLS:-}" ] && [ "${TLS}" != 0 ]; then
  bash scripts/dev-certs.sh
  export OMS_TLS_CERT_FILE=$PWD/$STATE/tls/service.crt OMS_TLS_KEY_FILE=$PWD/$STATE/tls/service.key
  export OMS_TLS_CA_FILE=$PWD/$STATE/tls/ca.crt
  GRPCURL_TLS=(-cacert "$STATE/tls/ca.crt" -cert "$STATE/tls/client.crt" -key "$STATE/tls/client.key")
  SCHEME=https
fi
export OMS_WMS_SIM_URL=${OMS_WMS_SIM_URL:-$SCHEME://127.0.0.1:50055}
export OMS_WMS_SIM_INVENTORY_URL=${OMS_WMS_SIM_INVENTORY_URL:-$SCHEME://127.0.0.1:50053}

export OMS_DATABASE_URL=${OMS_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/oms}
export OMS_LOG_FORMAT=${OMS_LOG_FORMAT:-pretty}
export OMS_LOG=${OMS_LOG:-info,sqlx::postgres::notice=warn}

services=(ingest orders inventory routing fulfillment returns billing notifications)
colors=(31 32 33 34 35 36 91 92)
: > "$PIDS"

stop_all() {
  trap - INT TERM EXIT
  echo
  echo "stopping the suite..."
  bash scripts/down.sh
}
trap stop_all INT TERM EXIT

for i in "${!services[@]}"; do
  s=${services[$i]}
  port=$((50051 + i))
  tag=$(printf '\033[%sm%-13s\033[0m|' "${colors[$i]}" "$s")
  # The log prefixer ignores Ctrl-C so a draining service's last lines
  # still show; it ends when the service closes its output.
  OMS_LISTEN_ADDR=0.0.0.0:$port "$BIN/oms-$s" > >(trap '' INT TERM; exec sed -u "s/^/$tag /") 2>&1 &
  echo $! >> "$PIDS"
done

GRPCURL=grpcurl
[ -x "$STATE/tools/venv/bin/grpcurl" ] && GRPCURL="$STATE/tools/venv/bin/grpcurl"

# Wait until every service is SERVING (migrated, dependencies up); without
# grpcurl, until its port answers.
for i in "${!services[@]}"; do
  port=$((50051 + i))
  for _ in $(seq 1 240); do
    if command -v "$GRPCURL" >/dev/null 2>&1; then
      "$GRPCURL" "${GRPCURL_TLS[@]}" -max-time 1 "127.0.0.1:$port" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING && break
    else
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    fi
    sleep 0.25
  done
done
# The reference WMS simulator, serving the nodes in OMS_WMS_SIM_NODES
# (default DC1) for the tenants in OMS_WMS_SIM_TENANTS (default acme), so
# released work ships end to end.
tag=$(printf '\033[%sm%-13s\033[0m|' 93 wms-sim)
"$BIN/oms-wms-sim" > >(trap '' INT TERM; exec sed -u "s/^/$tag /") 2>&1 &
echo $! >> "$PIDS"

cat <<MSG

The OMS is up:
  ingest         127.0.0.1:50051    oms.ingest.v1.IngestService
  orders         127.0.0.1:50052    oms.orders.v1.OrderService
  inventory      127.0.0.1:50053    oms.inventory.v1.InventoryService
  routing        127.0.0.1:50054    oms.routing.v1.RoutingService
  fulfillment    127.0.0.1:50055    oms.fulfillment.v1.FulfillmentService
  returns        127.0.0.1:50056    oms.returns.v1.ReturnService
  billing        127.0.0.1:50057    oms.billing.v1.BillingService
  notifications  127.0.0.1:50058    oms.notifications.v1.NotificationService
  wms-sim        (adapter)          serves ${OMS_WMS_SIM_NODES:-DC1} for ${OMS_WMS_SIM_TENANTS:-acme}

Call one (from another shell):
  TOKEN=\$(cargo run -q -p oms-cli -- token --tenant acme)
  $GRPCURL ${GRPCURL_TLS[*]} 127.0.0.1:50052 list
  $GRPCURL ${GRPCURL_TLS[*]} -H "authorization: Bearer \$TOKEN" -d '{"page_size": 10}' \\
      127.0.0.1:50052 oms.orders.v1.OrderService/ListOrders

Ctrl-C (or 'make down') stops everything.

MSG

wait
