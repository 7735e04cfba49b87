#!/usr/bin/env bash
# Start the team's MLflow tracking server with MLflow's built-in authentication (`--app-name basic-auth`).
# Runs in the foreground until stopped (SIGTERM/SIGINT stop the server too). docs/operations.md: "Team server".
#
# Environment:
#   MLFLOW_AUTH_ADMIN_PASSWORD   admin password (required on the first start; >= 12 characters)
#   FLASHSIM_MLFLOW_ADMIN        admin user name (default admin)
#   FLASHSIM_MLFLOW_DIR          server state: auth db, SQLite store, artifacts (default ./mlflow-server)
#   FLASHSIM_MLFLOW_BACKEND      backend store URI (default sqlite:///$DIR/mlflow.db; a team uses PostgreSQL)
#   FLASHSIM_MLFLOW_HOST/PORT    where to listen (default 127.0.0.1:5000; put a TLS proxy in front, never
#                                expose plain HTTP with passwords beyond loopback)
#   FLASHSIM_MLFLOW_WORKERS      server worker processes (default 4)
#   FLASHSIM_MLFLOW_USERS        optional file, one "USER PASSWORD" per line: one account per person or CI job,
#                                created (or its password updated) once the server answers
#   FLASHSIM_MLFLOW_DEFAULT_PERMISSION  what users may do on experiments they do not own (default READ)
#   FLASHSIM_MLFLOW_SERVER_ARGS  extra `mlflow server` options (e.g. --allowed-hosts mlflow.example.cern.ch)
#   FLASHSIM_MLFLOW_AUTH_CACHE_SECONDS  how long a worker trusts a checked password (default 30; each check is a
#                                slow PBKDF2 hash, per request; a changed password reaches other workers after this)
set -euo pipefail

: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD (the admin password, >= 12 characters)}"
DIR=${FLASHSIM_MLFLOW_DIR:-mlflow-server}
HOST=${FLASHSIM_MLFLOW_HOST:-127.0.0.1}
PORT=${FLASHSIM_MLFLOW_PORT:-5000}
WORKERS=${FLASHSIM_MLFLOW_WORKERS:-4}
ADMIN=${FLASHSIM_MLFLOW_ADMIN:-admin}
mkdir -p "$DIR/artifacts"
DIR=$(cd "$DIR" && pwd)
BACKEND=${FLASHSIM_MLFLOW_BACKEND:-sqlite:///$DIR/mlflow.db}
CFG="$DIR/basic_auth.ini"
umask 077
cat > "$CFG" <<INI
[mlflow]
default_permission = ${FLASHSIM_MLFLOW_DEFAULT_PERMISSION:-READ}
database_uri = sqlite:///$DIR/basic_auth.db
admin_username = $ADMIN
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${FLASHSIM_MLFLOW_AUTH_CACHE_SECONDS:-30}
INI
# The Flask secret (CSRF of the sign-up page) must be the same in every worker and across restarts: kept in $DIR.
[[ -s "$DIR/secret_key" ]] || python -c 'import secrets; print(secrets.token_hex(32))' > "$DIR/secret_key"
export MLFLOW_FLASK_SERVER_SECRET_KEY="${MLFLOW_FLASK_SERVER_SECRET_KEY:-$(cat "$DIR/secret_key")}"
export MLFLOW_AUTH_CONFIG_PATH="$CFG" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
URL="http://$HOST:$PORT"

# `mlflow server` creates the schemas and the admin user once, before it starts the workers.
mlflow server --app-name basic-auth --backend-store-uri "$BACKEND" --artifacts-destination "$DIR/artifacts" \
  --host "$HOST" --port "$PORT" --workers "$WORKERS" ${FLASHSIM_MLFLOW_SERVER_ARGS:-} &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server"; exit 143' TERM INT
python -m flashsim.mlops.team_server wait "$URL"
if [[ -n "${FLASHSIM_MLFLOW_USERS:-}" ]]; then
  MLFLOW_TRACKING_USERNAME="$ADMIN" MLFLOW_TRACKING_PASSWORD="$MLFLOW_AUTH_ADMIN_PASSWORD" \
    python -m flashsim.mlops.team_server users "$URL" "$FLASHSIM_MLFLOW_USERS"
fi
echo "start-mlflow: MLflow with authentication at $URL (state in $DIR)" >&2
wait "$server"
