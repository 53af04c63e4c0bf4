#!/usr/bin/env bash
# `make k8s-check`: renders every overlay with kustomize and validates the
# result against the Kubernetes schemas, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.oms/tools
KV_VERSION=1.31.0
if ! command -v kubectl >/dev/null; then
  echo "kubectl is needed to render kustomize overlays (apt-get install kubectl or kubernetes-client)" >&2
  exit 1
fi
if [ ! -x "$TOOLS/venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q "kubernetes-validate"
fi
for overlay in k8s/overlays/*/; do
  out=$(mktemp)
  kubectl kustomize "$overlay" > "$out"
  echo "== $overlay: $(grep -c '^kind:' "$out") objects"
  "$TOOLS/venv/bin/kubernetes-validate" --strict -k "$KV_VERSION" "$out"
  rm -f "$out"
done
