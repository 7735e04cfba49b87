#!/usr/bin/env bash
# Start optuna-dashboard (PyPI) on the storage of a flashsim study, on loopback (reach it with `ssh -L`). Run it
# from the repository root.
#
#   scripts/start-optuna-dashboard.sh NAME [PORT]      # the journal file results/tune/NAME/journal.log
#   FLASHSIM_TUNE_STORAGE=postgresql://flashsim@db.example.org:5432/optuna scripts/start-optuna-dashboard.sh
#
# The storage is $FLASHSIM_TUNE_STORAGE when set (a PostgreSQL password comes from PGPASSWORD or ~/.pgpass, never
# from the URL), else the model's journal file. Runs in the foreground until Ctrl-C; PORT defaults to 8080.
set -euo pipefail
NAME=${1:-}
PORT=${2:-8080}
STORAGE=${FLASHSIM_TUNE_STORAGE:-}
if [ -z "$STORAGE" ]; then
  [ -n "$NAME" ] || { echo "usage: $0 NAME [PORT]  (or set FLASHSIM_TUNE_STORAGE)" >&2; exit 2; }
  STORAGE=results/tune/$NAME/journal.log
  [ -f "$STORAGE" ] || { echo "start-optuna-dashboard: $STORAGE not found (run flashsim tune $NAME first)" >&2; exit 2; }
  exec optuna-dashboard --host 127.0.0.1 --port "$PORT" --storage-class JournalFileStorage "$STORAGE"
fi
case "$STORAGE" in
  postgresql://*) STORAGE="postgresql+psycopg://${STORAGE#postgresql://}" ;;
  journal:*) exec optuna-dashboard --host 127.0.0.1 --port "$PORT" --storage-class JournalFileStorage "${STORAGE#journal:}" ;;
esac
exec optuna-dashboard --host 127.0.0.1 --port "$PORT" "$STORAGE"
