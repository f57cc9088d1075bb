#!/usr/bin/env bash
# Install what the tests need and run them. `.ci/run` calls this; so can you:
#   bash tests/run.sh [pytest args]
# System packages (Debian): docker-registry (CNCF distribution), skopeo, umoci, chromium, zstd, containerd,
# xfsprogs, btrfs-progs.
# Python: the project with its test extra, always in this checkout's own ./.venv: a virtualenv that
# happens to be active is left alone (its ferry is neither used nor replaced).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null || [ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
command -v chromium >/dev/null || need+=(chromium)
command -v zstd >/dev/null || need+=(zstd)
command -v ctr >/dev/null || need+=(containerd)  # a real pull client for ferry serve
command -v mkfs.xfs >/dev/null || [ -x /usr/sbin/mkfs.xfs ] || need+=(xfsprogs)  # reflinks: loop-mounted XFS and btrfs (root only)
command -v mkfs.btrfs >/dev/null || [ -x /usr/sbin/mkfs.btrfs ] || [ -x /sbin/mkfs.btrfs ] || need+=(btrfs-progs)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing ${need[*]} (apt-get)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# python3 from PATH may be an active virtualenv's: take the interpreter it was made from.
[ -x .venv/bin/python ] || "$(python3 -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')" -m venv .venv
unset VIRTUAL_ENV PYTHONHOME
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# the packages' types (configuration: pyproject.toml [tool.mypy]); errors fail the run
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
