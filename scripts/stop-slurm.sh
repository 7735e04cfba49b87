#!/usr/bin/env bash
# Stop the single-node Slurm started by scripts/start-slurm.sh (its daemons only, by their pid files).
# munged is left running (other tools may use it). FLASHSIM_SLURM_DIR as for start-slurm.sh.
set -euo pipefail
DIR=${FLASHSIM_SLURM_DIR:-/tmp/flashsim-slurm}
CONF=$DIR/etc/slurm.conf
for d in slurmd slurmctld; do
  pidfile=$DIR/run/$d.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "stop-slurm: stopped $d ($pid)"
  fi
  rm -f "$pidfile"
done
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
  rm -f /etc/slurm/slurm.conf
fi
