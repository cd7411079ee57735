#!/usr/bin/env bash
# A private PostgreSQL cluster in one folder, listening on 127.0.0.1 only, for the scaled-out stack and its tests.
#   bash scripts/pg.sh start DIR [DB ...]   initdb DIR (once), start it on a free port, create the databases;
#                                           prints the port. Started again, it reuses the cluster and its port.
#   bash scripts/pg.sh stop DIR             stop it (fast shutdown); the data stays
#   bash scripts/pg.sh url DIR DB [DRIVER]  the SQLAlchemy URL of database DB, e.g. postgresql+asyncpg://...
#   bash scripts/pg.sh status DIR           'running on PORT' or 'stopped' (exit 1)
# DIR holds data/ (the cluster), password (the 'galaxy' role's, mode 600), port and log. As root the server runs
# as the `postgres` system user (PostgreSQL refuses root), which then owns DIR. GALAXY_PG_OPTIONS adds server
# options (the tests pass '-c fsync=off'). Needs PostgreSQL's server binaries (Debian: postgresql-15).
set -euo pipefail

die() { echo "error: $*" >&2; exit 1; }

bindir() {  # the folder of initdb/pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin
  local found
  found=$(command -v initdb 2>/dev/null || true)
  if [ -n "$found" ]; then dirname "$(readlink -f "$found")"; return; fi
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$found" ] && [ -x "$found/initdb" ] || die "PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql-15"
  echo "$found"
}

as_owner() {  # run a server command as the cluster's owner: this user, or `postgres` when we are root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

running() { [ -f "$DIR/data/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; }

init() {
  [ -f "$DIR/data/PG_VERSION" ] && return 0
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' system user (PostgreSQL refuses root)"
    chown postgres "$DIR"
    runuser -u postgres -- test -w "$DIR" || die "$DIR: the postgres user cannot reach it (a parent folder is private)"
  fi
  (umask 077; python3 -c 'import secrets; print(secrets.token_hex(16))' >"$DIR/password")
  if [ "$(id -u)" = 0 ]; then chown postgres "$DIR/password"; fi
  as_owner "$BIN/initdb" -D "$DIR/data" -U galaxy --pwfile="$DIR/password" -A scram-sha-256 -E UTF8 --locale=C \
    --no-sync --no-instructions >"$DIR/initdb.log" 2>&1 || die "initdb failed; see $DIR/initdb.log"
}

psql_do() {  # database, SQL: prints the rows, unaligned
  PGPASSWORD=$(cat "$DIR/password") "$BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 \
    -p "$(cat "$DIR/port")" -U galaxy -d "$1" -c "$2"
}

start() {
  init
  if ! running; then
    local port
    port=$(cat "$DIR/port" 2>/dev/null || free_port)
    echo "$port" >"$DIR/port"
    if [ "$(id -u)" = 0 ]; then touch "$DIR/log" && chown postgres "$DIR/log"; fi
    # shellcheck disable=SC2086  # GALAXY_PG_OPTIONS is a list of server options
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' ${GALAXY_PG_OPTIONS:-}" start \
      >/dev/null || die "PostgreSQL did not start on 127.0.0.1:$port; see $DIR/log"
  fi
  for db in "$@"; do
    [ -n "$(psql_do postgres "SELECT 1 FROM pg_database WHERE datname = '$db'")" ] ||
      psql_do postgres "CREATE DATABASE \"$db\"" >/dev/null
  done
  cat "$DIR/port"
}

stop() {
  if running; then as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast -w -t 60 stop >/dev/null; fi
}

url() {  # database [driver]
  [ -f "$DIR/port" ] || die "$DIR: no cluster started there (bash scripts/pg.sh start $DIR)"
  local scheme=postgresql
  [ -n "${2:-}" ] && scheme="postgresql+$2"
  echo "$scheme://galaxy:$(cat "$DIR/password")@127.0.0.1:$(cat "$DIR/port")/$1"
}

[ $# -ge 2 ] || { echo "usage: bash scripts/pg.sh start|stop|url|status DIR [...]" >&2; exit 2; }
cmd=$1
DIR=$(mkdir -p "$(dirname "$2")" && cd "$(dirname "$2")" && pwd)/$(basename "$2")
shift 2
BIN=$(bindir)
case "$cmd" in
  start) start "$@" ;;
  stop) stop ;;
  url) url "$@" ;;
  status) if running; then echo "running on $(cat "$DIR/port")"; else echo stopped; exit 1; fi ;;
  *) echo "usage: bash scripts/pg.sh start|stop|url|status DIR [...]" >&2; exit 2 ;;
esac
