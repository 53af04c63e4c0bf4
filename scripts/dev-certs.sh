#!/usr/bin/env bash
# `make up TLS=1` and `make certs`: a local CA under .oms/tls, a certificate
# the services share on this machine (localhost, 127.0.0.1) and one for you
# (grpcurl). Never for production: there each service has its own (see
# the README).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.oms/tls
command -v openssl >/dev/null || { echo "openssl is needed (apt-get install openssl)" >&2; exit 1; }
# Made again when missing or within a day of expiring (they last 90 days;
# an expired one would stop the services at start).
if [ -s "$DIR/client.key" ] && openssl x509 -checkend 86400 -noout -in "$DIR/service.crt" >/dev/null 2>&1 \
  && openssl x509 -checkend 86400 -noout -in "$DIR/client.crt" >/dev/null 2>&1; then
  exit 0
fi
rm -rf "$DIR"
mkdir -p "$DIR"
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec "$DIR/ca.key"
openssl req -x509 -new -key "$DIR/ca.key" -out "$DIR/ca.crt" -days 365 -subj "/CN=OMS local CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
issue() { # name, CN
  ec "$DIR/$1.key"
  openssl req -new -key "$DIR/$1.key" -subj "/CN=$2" -out "$DIR/$1.csr"
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > "$DIR/$1.ext"
  openssl x509 -req -in "$DIR/$1.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
    -days 90 -extfile "$DIR/$1.ext" -out "$DIR/$1.crt" 2>/dev/null
  rm -f "$DIR/$1.csr" "$DIR/$1.ext"
}
issue service "oms local services"
issue client "oms local client"
chmod 600 "$DIR"/*.key
echo "certificates in $DIR: ca.crt, service.crt/.key (the services), client.crt/.key (you)"
