#!/usr/bin/env bash
# The CI `retrain` job (.gitlab-ci.yml): dvc pull -> workflow -> dvc push -> metrics diff against main -> publish
# dvc.lock (+ params.yaml) on a branch retrain/<sha>-<pipeline> with a merge request into the default branch.
# Runs anywhere with git + make + python3; on a GPU runner torch trains on CUDA (FLASHSIM_DEVICE=auto).
#
# Variables: VENV (default .venv), FLASHSIM_DEVICE (auto|cpu|cuda), FLASHSIM_SCALE (demo|full, empty: params.yaml),
# FLASHSIM_PARAMS ("KEY=VALUE ..." params overrides), DVC_REMOTE (remote name, default: the default remote),
# DVC_REMOTE_URL / DVC_REMOTE_USER / DVC_REMOTE_PASSWORD (written to .dvc/config.local only),
# FLASHSIM_COMPARE_REF (default: origin/$CI_DEFAULT_BRANCH or origin/main),
# FLASHSIM_GITLAB_TOKEN (with CI_API_V4_URL, CI_PROJECT_ID, CI_MERGE_REQUEST_IID: post the diff to the MR),
# FLASHSIM_PUSH_TOKEN (write_repository: push the retrain branch to $CI_SERVER_HOST/$CI_PROJECT_PATH and open its
# merge request) or FLASHSIM_PUSH_URL (any git URL; no merge request options); neither: dvc.lock stays an artifact.
# MLflow: MLFLOW_TRACKING_URI (+ _USERNAME/_PASSWORD) from the project's CI variables, read by the trainings.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
section() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }

section "environment ($VENV)"
make env VENV="$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export FLASHSIM_DEVICE=${FLASHSIM_DEVICE:-auto}
python - <<'EOF'
import os, torch
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, CUDA available: {cuda}"
      + (f" ({torch.cuda.get_device_name(0)})" if cuda else "") + f", FLASHSIM_DEVICE={os.environ['FLASHSIM_DEVICE']}")
EOF
echo "MLflow tracking: ${MLFLOW_TRACKING_URI:-local store (MLFLOW_TRACKING_URI not set)}"

[ -d .dvc ] || { echo "ci-retrain: not a DVC repository (no .dvc/)" >&2; exit 1; }
remote=${DVC_REMOTE:-$(dvc remote default 2>/dev/null || true)}
if [ -n "${DVC_REMOTE_URL:-}" ]; then
  remote=${remote:-ci}
  dvc remote add --local --force --default "$remote" "$DVC_REMOTE_URL"
fi
[ -n "${DVC_REMOTE_USER:-}" ] && dvc remote modify --local "$remote" user "$DVC_REMOTE_USER"
[ -n "${DVC_REMOTE_PASSWORD:-}" ] && dvc remote modify --local "$remote" password "$DVC_REMOTE_PASSWORD"
[ -n "$remote" ] || { echo "ci-retrain: no DVC remote (set DVC_REMOTE_URL or a default remote)" >&2; exit 1; }
echo "DVC remote: $remote"

section "dvc pull"
# Outputs that were never pushed (first run, new models) are rebuilt by the workflow.
if [ -f dvc.lock ]; then dvc pull --remote "$remote" --allow-missing; else echo "no dvc.lock yet: nothing to pull"; fi

section "workflow"
set_params=()
[ -n "${FLASHSIM_SCALE:-}" ] && set_params+=(-S "scale=$FLASHSIM_SCALE")
set -f  # overrides such as species=[K] are not file patterns
for kv in ${FLASHSIM_PARAMS:-}; do set_params+=(-S "$kv"); done
set +f
echo "params overrides: ${set_params[*]:-none}"
dvc exp run "${set_params[@]}"

section "dvc push"
dvc push --remote "$remote"

section "metrics diff"
ref=${FLASHSIM_COMPARE_REF:-origin/${CI_DEFAULT_BRANCH:-main}}
git fetch --quiet origin "+refs/heads/${ref#origin/}:refs/remotes/$ref" 2>/dev/null || true
baseline=yes
git cat-file -e "$ref:dvc.lock" 2>/dev/null || baseline=
{
  echo "### flashsim retrain: metrics against \`$ref\`"
  echo
  echo "commit \`$(git rev-parse --short HEAD)\`, params overrides: \`${set_params[*]:-none}\`"
  echo
  [ -n "$baseline" ] || printf '%s\n\n' "No dvc.lock on \`$ref\` yet, so no baseline: merge a retrain branch to give it one."
  dvc metrics diff --md --all "$ref"
} > retrain-metrics-diff.md
cat retrain-metrics-diff.md

section "publish dvc.lock"
# What `dvc push` stored is reachable only through a commit of dvc.lock: commit it (with params.yaml as the
# experiment overrode it) on a branch and push that with a merge request into the default branch. Merged, it gives
# main its dvc.lock: `dvc pull` gets these models and reports, `dvc metrics diff main` has its baseline.
push_url=${FLASHSIM_PUSH_URL:-}
push_opts=()
if [ -z "$push_url" ] && [ -n "${FLASHSIM_PUSH_TOKEN:-}" ]; then
  push_url="https://oauth2:${FLASHSIM_PUSH_TOKEN}@${CI_SERVER_HOST}/${CI_PROJECT_PATH}.git"
  push_opts=(-o merge_request.create -o "merge_request.target=${CI_DEFAULT_BRANCH:-main}"
             -o "merge_request.title=retrain: dvc.lock of $(git rev-parse --short HEAD)")
fi
branch="retrain/$(git rev-parse --short HEAD)-${CI_PIPELINE_ID:-$(date -u +%Y%m%d%H%M%S)}"
if [ -z "$push_url" ]; then
  echo "not published (set FLASHSIM_PUSH_TOKEN or FLASHSIM_PUSH_URL): dvc.lock is kept as a job artifact"
else
  git add dvc.lock params.yaml
  if git diff --cached --quiet; then
    echo "dvc.lock and params.yaml unchanged: nothing to publish"
  else
    git -c user.name="flashsim retrain" -c user.email="flashsim-retrain@localhost" commit -q \
      -m "retrain: dvc.lock (models, reports pushed to the DVC remote)" \
      -m "params overrides: ${set_params[*]:-none}; pipeline ${CI_PIPELINE_URL:-local}"
    git push "${push_opts[@]}" "$push_url" "HEAD:refs/heads/$branch"
    echo "published dvc.lock on branch $branch"
  fi
fi

if [ -n "${FLASHSIM_GITLAB_TOKEN:-}" ] && [ -n "${CI_MERGE_REQUEST_IID:-}" ]; then
  section "merge request note"
  python - <<'EOF'
import json, os, urllib.request
url = f"{os.environ['CI_API_V4_URL']}/projects/{os.environ['CI_PROJECT_ID']}/merge_requests/" \
      f"{os.environ['CI_MERGE_REQUEST_IID']}/notes"
body = json.dumps({"body": open("retrain-metrics-diff.md").read()}).encode()
req = urllib.request.Request(url, body, {"PRIVATE-TOKEN": os.environ["FLASHSIM_GITLAB_TOKEN"],
                                         "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    print(f"posted the metrics diff to merge request !{os.environ['CI_MERGE_REQUEST_IID']} ({r.status})")
EOF
fi
