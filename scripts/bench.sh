#!/usr/bin/env bash
# `make bench`: the OMS's benchmark scenarios beside the raw Postgres and
# Redis baselines of ../shared/bench/baseline.sh, all measured in this run
# on this machine, reported as ratios to those baselines.
#   BENCH_SECONDS (default 10)  seconds per measurement
#   BENCH_CLIENTS (default 256)        concurrent gRPC clients of the hot-SKU scenario
#   BENCH_INGEST_CLIENTS (default 64)  concurrent clients of the ingest scenario
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${OMS_SHARED_DIR:-../shared}
SECS=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-256}
INGEST_CLIENTS=${BENCH_INGEST_CLIENTS:-64}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
mkdir -p .oms
[ -f "$SHARED/bench/baseline.sh" ] || { echo "no $SHARED/bench/baseline.sh (set OMS_SHARED_DIR)" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "pgbench is needed (apt-get install postgresql-contrib or postgresql-client)" >&2; exit 1; }

echo "== building (release)"
cargo build --release --quiet -p oms-bench
BIN="${CARGO_TARGET_DIR:-target}/release/oms-bench"

echo "== baseline: raw Postgres and Redis (${SECS}s per test)"
bash "$SHARED/bench/baseline.sh" "$SECS" | tee .oms/bench-baseline.json

echo "== hot SKU: $CLIENTS clients reserving 1 unit of one SKU through gRPC (${SECS}s)"
"$BIN" hot-sku --clients "$CLIENTS" --seconds "$SECS" | tee .oms/bench-hot-sku.json

echo "== ingest: $INGEST_CLIENTS clients submitting 3-line orders through ingest -> orders (${SECS}s)"
"$BIN" ingest --clients "$INGEST_CLIENTS" --seconds "$SECS" | tee .oms/bench-ingest.json

python3 - <<'PY'
import json
b = json.load(open(".oms/bench-baseline.json"))
h = json.load(open(".oms/bench-hot-sku.json"))
r = h["reservations_per_s"]
def ratio(x):
    return f"{r / x:.2f}x" if x else "n/a"
print()
print("hot SKU reservations through gRPC (durable, verified):")
print(f"  {r:,.0f} reservations/s   p50 {h['p50_ms']:.2f} ms   p99 {h['p99_ms']:.2f} ms   oversold {h['oversold']}")
print(f"  vs redis_reserve_ops {b['redis_reserve_ops']:,.0f}/s: {ratio(b['redis_reserve_ops'])} (target >= 0.5x)")
print(f"  vs pg_hot_row_tps    {b['pg_hot_row_tps']:,.0f}/s: {ratio(b['pg_hot_row_tps'])} (target >= 20x)")
i = json.load(open(".oms/bench-ingest.json"))
o = i["orders_per_s"]
print()
print("ingest of 3-line orders through gRPC (ingest -> orders, durable, verified):")
print(f"  {o:,.0f} orders/s   p50 {i['p50_ms']:.2f} ms   p99 {i['p99_ms']:.2f} ms")
print(f"  vs pg_order_tps {b['pg_order_tps']:,.0f}/s: {o / b['pg_order_tps']:.2f}x (target >= 1.0x)")
PY
