#!/usr/bin/env bash
# Stop the PostgreSQL server of scripts/start-postgres.sh (same FLASHSIM_PG_DIR); its data stay for the next start.
set -euo pipefail
DIR=${FLASHSIM_PG_DIR:-/tmp/flashsim-postgres}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -f "$DIR/data/PG_VERSION" ] || exit 0
if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
else "$PG_BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true; fi
