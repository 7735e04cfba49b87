#!/usr/bin/env bash
# Start a PostgreSQL server on loopback for Optuna studies (flashsim tune --storage postgresql://...), from Debian's
# `postgresql` package (scripts/setup-system.sh installs it). Idempotent: returns at once when it already runs.
#
#   scripts/start-postgres.sh        # prints the storage URL (without the password)
#   scripts/stop-postgres.sh
#
# Environment: FLASHSIM_PG_DIR (default /tmp/flashsim-postgres: data, socket, log), FLASHSIM_PG_PORT (5433),
# FLASHSIM_PG_USER (flashsim), FLASHSIM_PG_DB (optuna), PG_BIN (default: the newest /usr/lib/postgresql/*/bin).
# Password: PGPASSWORD when set (nothing is written); else a random one is generated and added to ~/.pgpass (mode
# 600), where libpq (psycopg) finds it. It is never printed. Runs the server as user postgres when started as root.
set -euo pipefail
DIR=${FLASHSIM_PG_DIR:-/tmp/flashsim-postgres}
PORT=${FLASHSIM_PG_PORT:-5433}
ROLE=${FLASHSIM_PG_USER:-flashsim}
DB=${FLASHSIM_PG_DB:-optuna}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PG_BIN/pg_ctl" ] || { echo "start-postgres: PostgreSQL binaries not found (run scripts/setup-system.sh)" >&2; exit 1; }
URL="postgresql://$ROLE@127.0.0.1:$PORT/$DB"

as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ -f "$DIR/data/PG_VERSION" ] && as_owner "$PG_BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  echo "start-postgres: already running: $URL"
  exit 0
fi

umask 077
mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown postgres: "$DIR"
SUPERPW="$DIR/superuser.pw"  # the cluster superuser's password, readable by its owner only
if [ ! -f "$DIR/data/PG_VERSION" ]; then
  as_owner sh -c "umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' > '$SUPERPW'"
  as_owner "$PG_BIN/initdb" -D "$DIR/data" -A scram-sha-256 --username=postgres --pwfile="$SUPERPW" >"$DIR/initdb.log"
fi
as_owner "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
  -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null

if [ -z "${PGPASSWORD:-}" ]; then  # the role's password: generated once, kept in ~/.pgpass
  PASS=$(grep -s "^127.0.0.1:$PORT:\*:$ROLE:" "$HOME/.pgpass" | head -1 | cut -d: -f5- || true)
  if [ -z "$PASS" ]; then
    PASS=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
    touch "$HOME/.pgpass" && chmod 600 "$HOME/.pgpass"
    echo "127.0.0.1:$PORT:*:$ROLE:$PASS" >>"$HOME/.pgpass"
  fi
else
  PASS=$PGPASSWORD
fi
# create the role and database (idempotent); passwords reach psql through the environment and stdin only
SUPER=$(as_owner cat "$SUPERPW")
PGPASSWORD=$SUPER "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
  -v role="$ROLE" -v db="$DB" -v pass="$PASS" >/dev/null <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role')
\gexec
ALTER ROLE :"role" PASSWORD :'pass';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db')
\gexec
SQL
echo "start-postgres: running: $URL"
