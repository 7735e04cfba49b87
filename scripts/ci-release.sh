#!/usr/bin/env bash
# CI job release-bundle (tags): build the release bundle of the compiled models and upload it to the project's
# generic package registry (flashsim-models/<tag>/). Writes dist/release.env (BUNDLE_NAME, BUNDLE_URL) for the
# `release` job, which attaches the bundle to the GitLab release with release-cli.
set -euo pipefail
tag="${CI_COMMIT_TAG:?release-bundle runs on tags}"
models="${FLASHSIM_RELEASE_MODELS:-}"
if [ -z "$models" ]; then
  dvc pull models reports
  models=models
fi
registry="${CI_API_V4_URL:-}/projects/${CI_PROJECT_ID:-}/packages/generic/flashsim-models"
previous="${FLASHSIM_PREVIOUS_BUNDLE:-}"
if [ -z "$previous" ] && [ "${FLASHSIM_UPLOAD:-1}" = "1" ]; then
  prev_tag="$(git describe --tags --abbrev=0 "${tag}^" 2>/dev/null || true)"
  if [ -n "$prev_tag" ]; then
    plat="$(python -c 'from flashsim.release import platform_tag; print(platform_tag())')"
    mkdir -p dist/previous
    if curl -fsSL --header "JOB-TOKEN: $CI_JOB_TOKEN" -o "dist/previous/bundle.tar.gz" \
        "$registry/$prev_tag/flashsim-models-$prev_tag-$plat.tar.gz"; then
      previous=dist/previous/bundle.tar.gz
    fi
  fi
fi
flashsim release --version "$tag" --models "$models" --reports reports --out dist --build \
  ${previous:+--previous "$previous"}
bundle="$(ls dist/flashsim-models-"$tag"-*.tar.gz)"
name="$(basename "$bundle" .tar.gz)"
(cd "dist/$name" && sha256sum -c --quiet SHA256SUMS)
url="$registry/$tag/$name.tar.gz"
if [ "${FLASHSIM_UPLOAD:-1}" = "1" ]; then
  curl -fsS --header "JOB-TOKEN: $CI_JOB_TOKEN" --upload-file "$bundle" "$url"
fi
printf 'BUNDLE_NAME=%s\nBUNDLE_URL=%s\n' "$name" "$url" > dist/release.env
echo "release bundle: $bundle"
