#!/usr/bin/env bash
# `make bench`: the project's benchmark scenarios beside the raw Postgres and
# Redis baselines of ../shared/bench/baseline.sh, measured in the same run,
# so figures are reported as ratios on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${OMS_SHARED_DIR:-../shared}
SECS=${BENCH_SECONDS:-10}
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
if [ ! -x "$SHARED/bench/baseline.sh" ] && [ ! -f "$SHARED/bench/baseline.sh" ]; then
  echo "baseline script not found at $SHARED/bench/baseline.sh (set OMS_SHARED_DIR)" >&2
  exit 1
fi
echo "baseline (${SECS}s per test):"
bash "$SHARED/bench/baseline.sh" "$SECS" | tee .oms/baseline.json
echo "No OMS scenario is built yet: the inventory, ingest, routing and fulfillment"
echo "issues add theirs here, each printed as a ratio to this baseline."
