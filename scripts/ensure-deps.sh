#!/usr/bin/env bash
# Makes sure Postgres (127.0.0.1:5432, user postgres without password) and
# Redis (127.0.0.1:6379) are running: starts them when installed, installs
# them with apt when not (as root, or with passwordless sudo), and otherwise
# says exactly what to do. Safe to run again and again.
set -euo pipefail

PGHOST_=${OMS_PG_HOST:-127.0.0.1}
PGPORT_=${OMS_PG_PORT:-5432}
REDIS_HOST_=${OMS_REDIS_HOST:-127.0.0.1}
REDIS_PORT_=${OMS_REDIS_PORT:-6379}

say() { printf '\033[1;34m[deps]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[deps]\033[0m %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" "$2" && return 0; sleep 0.5; done
  return 1
}

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; fi
fi
can_install() { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null || return 1
  can_install || return 1
  if [ -z "$APT_UPDATED" ]; then
    say "apt-get update"
    $SUDO apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  say "installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

start_postgres() {
  if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    local v
    v=$(ls /etc/postgresql | sort -V | tail -1)
    say "starting Postgres $v"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || true
    return 0
  fi
  return 1
}

# Local development trusts loopback connections, as the default
# OMS_DATABASE_URL (postgres://postgres@127.0.0.1:5432/oms) expects. Only
# done for a Postgres this script installed.
trust_loopback() {
  local v hba
  v=$(ls /etc/postgresql | sort -V | tail -1)
  hba=/etc/postgresql/$v/main/pg_hba.conf
  if ! $SUDO grep -q '# oms-local-trust' "$hba"; then
    say "allowing password-less loopback connections in $hba (local development)"
    $SUDO sed -i '1i host all all 127.0.0.1/32 trust # oms-local-trust\nhost all all ::1/128 trust # oms-local-trust' "$hba"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$v" main reload 2>/dev/null || true
  fi
}

ensure_postgres() {
  if port_open "$PGHOST_" "$PGPORT_"; then say "Postgres is up on $PGHOST_:$PGPORT_"; return; fi
  if ! start_postgres; then
    apt_install postgresql postgresql-client || die "Postgres is not running on $PGHOST_:$PGPORT_ and cannot be installed here.
  Install and start it, e.g.:  sudo apt-get install -y postgresql && sudo pg_ctlcluster \$(ls /etc/postgresql) main start
  and allow user postgres on 127.0.0.1 without a password (pg_hba.conf: host all all 127.0.0.1/32 trust),
  or point OMS_DATABASE_URL / OMS_TEST_DATABASE_URL at your server."
    start_postgres || true
    wait_port "$PGHOST_" "$PGPORT_" || die "Postgres did not start; see /var/log/postgresql/"
    trust_loopback
  fi
  wait_port "$PGHOST_" "$PGPORT_" || die "Postgres did not come up on $PGHOST_:$PGPORT_; see /var/log/postgresql/"
  say "Postgres is up on $PGHOST_:$PGPORT_"
}

start_redis() {
  command -v redis-server >/dev/null || return 1
  say "starting Redis"
  mkdir -p /tmp/oms-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT_" --save "" --appendonly no \
    --dir /tmp/oms-redis --logfile /tmp/oms-redis/redis.log >/dev/null
}

ensure_redis() {
  if port_open "$REDIS_HOST_" "$REDIS_PORT_"; then say "Redis is up on $REDIS_HOST_:$REDIS_PORT_"; return; fi
  if ! start_redis; then
    apt_install redis-server || die "Redis is not running on $REDIS_HOST_:$REDIS_PORT_ and cannot be installed here.
  Install and start it, e.g.:  sudo apt-get install -y redis-server && redis-server --daemonize yes
  or point OMS_REDIS_URL / OMS_TEST_REDIS_URL at your server."
    start_redis || die "redis-server did not start"
  fi
  wait_port "$REDIS_HOST_" "$REDIS_PORT_" || die "Redis did not come up; see /tmp/oms-redis/redis.log"
  say "Redis is up on $REDIS_HOST_:$REDIS_PORT_"
}

ensure_postgres
ensure_redis
