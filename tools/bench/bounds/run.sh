#!/usr/bin/env bash
# Upper bounds of the hot-SKU scenario: what `oms-bench hot-sku` would do
# if the reservation record in Postgres, the Redis gate, or both cost
# nothing. `skip.patch` (applied to a scratch worktree of HEAD, never to
# the service) adds two switches to the batch writer: EXP_NOPG skips the
# rows (reservations, held totals, outbox events; the batch transaction
# still begins, locks and commits), EXP_NOGATE answers every reservation
# as granted without calling Redis. The variants alternate, ROUNDS times,
# between two runs of ../shared/bench/baseline.sh, so each figure reads
# against baselines of the same minutes. Runs without the record fail the
# bench's own check (nothing held in Postgres): expected, the figures are
# printed before it.
#   bash tools/bench/bounds/run.sh [seconds, default 6] [rounds, default 2]
# Needs what `make bench` needs; the scratch build goes to
# $BOUNDS_TARGET_DIR (default /var/tmp/oms-bounds-target: a non-LTO
# release build, a few minutes warm, twenty cold on a slow host).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
secs=${1:-6}; rounds=${2:-2}
shared=${OMS_SHARED_DIR:-$repo/../shared}
target=${BOUNDS_TARGET_DIR:-/var/tmp/oms-bounds-target}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
work=$(mktemp -d /tmp/oms-bounds.XXXXXX)
trap 'git -C "$repo" worktree remove --force "$work" >/dev/null 2>&1 || true' EXIT
git -C "$repo" worktree add -q --detach "$work" HEAD
git -C "$work" apply "$here/skip.patch"
echo "== building the patched scratch copy (release, no LTO) into $target" >&2
(cd "$work" && CARGO_TARGET_DIR=$target CARGO_PROFILE_RELEASE_LTO=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 cargo build --release --quiet -p oms-bench)
bin=$target/release/oms-bench
bash "$shared/bench/baseline.sh" 5 16
for r in $(seq "$rounds"); do
  for v in record-and-gate no-record no-gate neither; do
    case $v in
      record-and-gate) env=() ;;
      no-record) env=(EXP_NOPG=1) ;;
      no-gate) env=(EXP_NOGATE=1) ;;
      neither) env=(EXP_NOPG=1 EXP_NOGATE=1) ;;
    esac
    out=$(env "${env[@]}" "$bin" hot-sku --clients 256 --seconds "$secs" 2>/dev/null | tail -1 || true)
    printf '%-16s round %s: ' "$v" "$r"
    echo "$out" | python3 -c '
import json, sys
d = json.load(sys.stdin)
u, s = d["unary"], d["stream"]
print("unary %6.0f/s stream %6.0f/s; machine CPU per reservation %3.0f / %3.0f us; host steal %.2f"
      % (u["reservations_per_s"], s["reservations_per_s"], u["cpu_us_per_reservation"],
         s["cpu_us_per_reservation"], s["host_steal_share"]))'
  done
done
bash "$shared/bench/baseline.sh" 5 16
