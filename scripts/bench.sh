#!/usr/bin/env bash
# `make bench`: the OMS's benchmark scenarios beside the raw Postgres and
# Redis baselines of ../shared/bench/baseline.sh, all measured in this run
# on this machine, reported as ratios to those baselines.
#   BENCH_SECONDS (default 10)  seconds per measurement
#   BENCH_CLIENTS (default 256)        concurrent gRPC clients of the hot-SKU scenario
#   BENCH_INGEST_CLIENTS (default 256) concurrent clients of the ingest scenario
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${OMS_SHARED_DIR:-../shared}
SECS=${BENCH_SECONDS:-10}
CLIENTS=${BENCH_CLIENTS:-256}
INGEST_CLIENTS=${BENCH_INGEST_CLIENTS:-256}
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

echo "== expiry: 20,000 abandoned carts (one unit each, all due at once) given back by the expiry sweep"
"$BIN" expiry | tee .oms/bench-expiry.json
echo "== expiry during a sale: the same, with 32 clients reserving the SKU meanwhile"
"$BIN" expiry --buyers 32 | tee .oms/bench-expiry-sale.json

echo "== ingest: $INGEST_CLIENTS clients submitting 3-line orders through ingest -> orders (${SECS}s)"
"$BIN" ingest --clients "$INGEST_CLIENTS" --seconds "$SECS" | tee .oms/bench-ingest.json

echo "== stock snapshot import: three counts of 200 SKUs at 100 stores through gRPC, one call each"
"$BIN" import | tee .oms/bench-import.json

echo "== gate recovery: Reconcile and the rebuild after Redis lost its data, 2,000 SKUs at 50 nodes with 20,000 live reservations"
"$BIN" rebuild | tee .oms/bench-rebuild.json

echo "== routing: the sourcing engine in-process (10-1,000 nodes x 1/5/20 lines), its gap to the optimum, PlanOrder through gRPC (${SECS}s)"
"$BIN" routing --seconds "$SECS" | tee .oms/bench-routing.json

echo "== fulfillment: adapter streams walking fulfillment orders to delivered, release to adapter acknowledgement (${SECS}s each)"
"$BIN" fulfillment --seconds "$SECS" | tee .oms/bench-fulfillment.json

python3 - <<'PY'
import json
b = json.load(open(".oms/bench-baseline.json"))
h = json.load(open(".oms/bench-hot-sku.json"))
def ratio(r, x):
    return f"{r / x:.2f}x" if x else "n/a"
print()
print(f"hot SKU reservations through gRPC (durable, verified: oversold {h['oversold']}, record and availability agree: {h['consistent']}):")
print(f"  GetAvailability of the SKU with the {h['held_in_record']:,} units of the run held: {h['availability_read_ms']:.1f} ms")
for api, what in (("unary", "CreateReservation, one call at a time per client"),
                  ("stream", "StreamReservations, one stream per client, one reservation at a time on it")):
    f = h[api]
    r = f["reservations_per_s"]
    cpu = f.get("cpu_us_per_reservation")
    cpu = f"   machine CPU {cpu:.0f} us/reservation" if cpu else ""
    steal = f.get("host_steal_share")
    cpu += f" (host steal {steal:.0%})" if steal is not None else ""
    print(f"  {api}: {r:,.0f} reservations/s   p50 {f['p50_ms']:.2f} ms   p99 {f['p99_ms']:.2f} ms{cpu}   ({what})")
    print(f"    vs redis_reserve_ops {b['redis_reserve_ops']:,.0f}/s: {ratio(r, b['redis_reserve_ops'])} (target >= 0.5x)"
          f"   vs pg_hot_row_tps {b['pg_hot_row_tps']:,.0f}/s: {ratio(r, b['pg_hot_row_tps'])} (target >= 20x)")
c = h["grpc_noop_calls_per_s"]
s = h["stream_refused_at_validation_per_s"]
print(f"  ceilings here, same clients and connections, nothing stored:")
print(f"    a no-op unary call (health check) {c:,.0f}/s = {c / b['redis_reserve_ops']:.2f}x redis_reserve_ops")
print(f"    a stream message refused at validation {s:,.0f}/s = {s / b['redis_reserve_ops']:.2f}x redis_reserve_ops")
x = json.load(open(".oms/bench-expiry.json"))
print()
print(f"abandoned carts given back by the expiry sweep ({x['carts']:,} reservations of one unit, made in {x['reserve_seconds']:.1f} s, all due at once; verified: {x['verified']}):")
print(f"  {x['carts_per_s']:,.0f} carts/s ({x['expiry_seconds']:.1f} s from their due moment to availability whole)"
      f"   vs pg_order_tps {b['pg_order_tps']:,.0f}/s: {x['carts_per_s'] / b['pg_order_tps']:.2f}x")
x = json.load(open(".oms/bench-expiry-sale.json"))
y = x["buyers"]
print(f"  the same during a sale ({y['clients']} clients reserving the SKU one unit at a time; verified: {x['verified']}): {x['carts_per_s']:,.0f} carts/s")
for k, what in (("while_carts_wait", "while the carts wait"), ("while_carts_expire", "while they expire")):
    w = y[k]
    print(f"    buyers {what}: {w['calls']:,} reservations   p50 {w['p50_ms']:.2f} ms   p99 {w['p99_ms']:.2f} ms   max {w['max_ms']:.1f} ms")
i = json.load(open(".oms/bench-ingest.json"))
o = i["orders_per_s"]
print()
print("ingest of 3-line orders through gRPC (ingest -> orders, durable, verified):")
steal = i.get("host_steal_share")
steal = f"   (host steal {steal:.0%})" if steal is not None else ""
print(f"  {o:,.0f} orders/s   p50 {i['p50_ms']:.2f} ms   p99 {i['p99_ms']:.2f} ms{steal}")
print(f"  vs pg_order_tps {b['pg_order_tps']:,.0f}/s: {o / b['pg_order_tps']:.2f}x (target >= 1.0x)")
m = json.load(open(".oms/bench-import.json"))
print()
print(f"stock snapshot import through gRPC ({m['nodes']} stores x {m['skus']} SKUs = {m['rows']:,} rows a count, one call each; durable, verified: {m['verified']}):")
for k, what in (("first", "the first count (every lot new)"),
                ("unchanged", "the same count again"),
                ("lowered", "every figure lowered, reservations left short at one store")):
    r = m[k]["rows_per_s"]
    print(f"  {what}: {r:,.0f} rows/s ({m[k]['seconds']:.1f} s)   vs pg_order_tps {b['pg_order_tps']:,.0f}/s: {r / b['pg_order_tps']:.2f}x")
g = json.load(open(".oms/bench-rebuild.json"))
fl = g["raw_floor_seconds"]
print()
print(f"reservation gate recovery ({g['skus']:,} SKUs x {g['nodes']} nodes = {g['stock_rows']:,} stock rows, {g['reservations']:,} live reservations; verified: {g['verified']}):")
print(f"  raw floor (plain queries of those rows, their figures and records written in one Redis pipeline): {fl * 1000:.0f} ms")
for k, what in (("reconcile_dry_run_seconds", "Reconcile dry run (compare only)"),
                ("first_reservation_after_loss_seconds", "first reservation after FLUSHALL (waits for the rebuild)"),
                ("reconcile_seconds", "Reconcile (rebuild and compare)")):
    print(f"  {what}: {g[k] * 1000:.0f} ms = {g[k] / fl:.1f}x the floor")
t = json.load(open(".oms/bench-routing.json"))
print()
print("routing engine, one core (decisions/s, p50/p99 us; with the rendered explanation after |):")
for c in t["cases"]:
    e, x = c["engine"], c["with_explanation"]
    print(f"  {c['nodes']:>5} nodes x {c['lines']:>2} lines: {e['decisions_per_s']:>9,.0f}/s  p50 {e['p50_us']:7.1f}  p99 {e['p99_us']:7.1f}"
          f"  | {x['decisions_per_s']:>8,.0f}/s  p99 {x['p99_us']:7.1f}")
at = lambda n: [c for c in t["cases"] if c["nodes"] == n]
for c in at(50):
    ok = c["engine"]["decisions_per_s"] >= 100_000 and c["engine"]["p99_us"] <= 100
    print(f"  target at 50 nodes x {c['lines']} lines (>= 100,000/s, p99 <= 100 us): {'met' if ok else 'NOT met'}")
for c in at(1000):
    ok = c["engine"]["decisions_per_s"] >= 10_000
    print(f"  target at 1,000 nodes x {c['lines']} lines (>= 10,000/s): {'met' if ok else 'NOT met'}")
g = t["gap"]
print(f"  vs exhaustive optimum on {g['cases']} small cases: {g['optimal']} optimal, {g['more_shipments_than_optimum']} with more shipments,"
      f" mean cost gap {g['mean_cost_gap']:.3f} (max {g['max_cost_gap']:.3f}) score points of 0..{g['weights_sum']:.1f} per shipment")
r = t["grpc"]
one = r["one_client"]
p50_engine = [c for c in at(50) if c["lines"] == r["lines"]]
print(f"PlanOrder through gRPC ({r['nodes']} nodes x {r['lines']} lines; inventory call + Postgres write per decision):")
print(f"  1 client: {one['decisions_per_s']:,.0f}/s p50 {one['p50_ms']:.2f} ms p99 {one['p99_ms']:.2f} ms"
      + (f" (engine alone p50 {p50_engine[0]['with_explanation']['p50_us'] / 1000:.3f} ms)" if p50_engine else ""))
m = r["many_clients"]
print(f"  {r['clients']} clients: {m['decisions_per_s']:,.0f}/s p50 {m['p50_ms']:.2f} ms p99 {m['p99_ms']:.2f} ms;"
      f" vs pg_order_tps {b['pg_order_tps']:,.0f}/s: {m['decisions_per_s'] / b['pg_order_tps']:.2f}x")
f = json.load(open(".oms/bench-fulfillment.json"))
e, l = f["events"], f["release_to_ack"]
print()
print(f"status events through one fulfillment process ({e['adapters']} adapter streams, {e['inflight']} events in flight each; durable, verified: {e['verified']}):")
print(f"  {e['events_per_s']:,.0f} events/s   event to answer p50 {e['p50_ms']:.1f} ms p99 {e['p99_ms']:.1f} ms   refused {e['refused']}")
print(f"  vs pg_order_tps {b['pg_order_tps']:,.0f}/s: {e['events_per_s'] / b['pg_order_tps']:.2f}x   target >= 20,000/s: {'met' if e['events_per_s'] >= 20000 else 'NOT met'}")
print(f"release to adapter acknowledgement ({l['clients']} clients creating and releasing, {l['releases_per_s']:,.0f} releases/s):")
print(f"  p50 {l['p50_ms']:.1f} ms   p99 {l['p99_ms']:.1f} ms   (Release RPC alone p99 {l['release_rpc_p99_ms']:.1f} ms; {l['not_acknowledged']} not acknowledged)")
PY
