#!/usr/bin/env bash
# `make down`: stops what `make up` started (SIGTERM, so each service
# drains; SIGKILL for what is still there after 25 s).
set -uo pipefail
cd "$(dirname "$0")/.."
PIDS=.oms/pids
[ -s "$PIDS" ] || { echo "nothing to stop"; exit 0; }
pids=$(cat "$PIDS")
for p in $pids; do kill -TERM "$p" 2>/dev/null; done
for _ in $(seq 1 100); do
  alive=0
  for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  sleep 0.25
done
for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
: > "$PIDS"
echo "stopped"
