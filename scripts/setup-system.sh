#!/usr/bin/env bash
# System packages that the tests' real servers need (Debian/Ubuntu): XRootD (root:// and WebDAV),
# Slurm + munge, PostgreSQL (Optuna studies), rsync, Node.js for gitlab-ci-local and chromium (the report
# screenshot test). Idempotent; uses sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(xrootd-server xrootd-client slurm-wlm munge postgresql rsync chromium)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# Node.js may come from another source that bundles npm: only ask Debian for it when npm is missing.
command -v npm >/dev/null || missing+=(nodejs npm)
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -x node_modules/.bin/gitlab-ci-local ]; then
  npm install --no-save --no-audit --no-fund --silent gitlab-ci-local@4.73.0 >/dev/null
fi
