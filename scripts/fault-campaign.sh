#!/usr/bin/env bash
# The fault campaign (tests/faults.py): every fault and bad-input case; summary in reports/faults.json.
# Extra arguments go to pytest (e.g. -x, -k prepare).
set -euo pipefail
cd "$(dirname "$0")/.."
export FLASHSIM_FAULTS_REPORT=${FLASHSIM_FAULTS_REPORT:-reports/faults.json}
python -m pytest -m fault "$@"
echo "fault campaign: $FLASHSIM_FAULTS_REPORT" >&2
