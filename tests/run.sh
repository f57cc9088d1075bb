#!/usr/bin/env bash
# Install what the tests need and run them. `.ci/run` calls this; so can you:
#   bash tests/run.sh [pytest args]
# System packages (Debian): docker-registry (CNCF distribution), skopeo, umoci, chromium, zstd, containerd.
# Python: the project with its test extra, in ./.venv unless a virtualenv is already active.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null || [ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
command -v chromium >/dev/null || need+=(chromium)
command -v zstd >/dev/null || need+=(zstd)
command -v ctr >/dev/null || need+=(containerd)  # a real pull client for ferry serve
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing ${need[*]} (apt-get)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install -q --disable-pip-version-check -e '.[test]'
exec python -m pytest "$@"
