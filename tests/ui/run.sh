#!/usr/bin/env bash
# ctest UiConsole: runs console_test.mjs (see there) on Node.js.
#
# usage: run.sh DCBD_COURSES_BINARY [SCREENSHOT_DIR]
#
# Without Node.js it exits 77 (skipped), or fails under CI=true.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
if ! command -v node >/dev/null; then
  if [[ "${CI:-}" == true ]]; then
    echo "node not found, and CI=true: run ./dev deps" >&2
    exit 1
  fi
  echo "SKIPPED: node not found (./dev deps installs nodejs)"
  exit 77
fi
args=(--node "${1:?usage: run.sh DCBD_COURSES_BINARY [SCREENSHOT_DIR]}")
[[ -n "${2:-}" ]] && args+=(--screenshots "$2")
exec node "$here/console_test.mjs" "${args[@]}"
