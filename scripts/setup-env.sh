#!/usr/bin/env bash
# Create (or update) the Python environment: torch first (the CPU build when no NVIDIA GPU is present),
# then flashsim and everything else in one pip call. Idempotent: does nothing when pyproject.toml is unchanged.
set -euo pipefail
VENV=${1:-.venv}
cd "$(dirname "$0")/.."
stamp="$VENV/.flashsim-env"
want=$(sha256sum pyproject.toml scripts/setup-env.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "flashsim needs Python >= 3.11"'
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
TORCH=${TORCH_SPEC:-torch==2.13.0}
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" install -q "$TORCH"
  else
    # CPU build: PyTorch's CPU wheel index when reachable, else whatever pip finds (local wheels, PyPI).
    "${pip[@]}" install -q --retries 0 --timeout 10 \
      --extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}" "$TORCH" 2>/dev/null \
      || "${pip[@]}" install -q "$TORCH"
  fi
fi
"${pip[@]}" install -q -e '.[test]'
echo "$want" > "$stamp"
echo "environment ready in $VENV"
