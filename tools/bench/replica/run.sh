#!/usr/bin/env bash
# A pgbench replica of one reservation batch (128 reservations of one hot
# SKU, one transaction) as the inventory writer sends it, beside variants
# of the record, to see what each part of the record costs Postgres. Each
# variant runs on a fresh database, alternating, ROUNDS times.
#   bash tools/bench/replica/run.sh [seconds, default 8] [rounds, default 2]
# Needs pgbench and a Postgres (PGHOST/PGUSER as for baseline.sh).
# Variants: current (the writer on 2026-12-02 before the held totals), with-probe (plus the
# primary-key probe it made before 2026-12-02), no-hold-rows,
# holds-per-batch, holds-and-event-per-batch, log-row-per-batch.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-8}; rounds=${2:-2}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
db=oms_replica_$$
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT
for r in $(seq "$rounds"); do
  for v in current with-probe no-hold-rows holds-per-batch holds-and-event-per-batch log-row-per-batch; do
    dropdb --if-exists "$db" >/dev/null 2>&1 || true
    createdb "$db"
    psql -X -q -v ON_ERROR_STOP=1 -d "$db" -f "$here/schema.sql" >/dev/null
    tps=$(pgbench -n -c 4 -j 2 -T "$secs" -f "$here/$v.sql" "$db" 2>/dev/null | grep -E '^tps' | sed -E 's/tps = ([0-9.]+).*/\1/')
    printf '%-28s round %s: %8.1f batches/s = %9.0f reservations/s\n' "$v" "$r" "$tps" "$(awk -v t="$tps" 'BEGIN { print t * 128 }')"
  done
done
