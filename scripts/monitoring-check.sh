#!/usr/bin/env bash
# `make lint` part: scripts/monitoring-check.py in a venv of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.oms/tools/venv-monitoring
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import promql_parser, yaml' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "promql-parser==0.12.0" "PyYAML==6.0.2"
fi
"$venv/bin/python" scripts/monitoring-check.py
