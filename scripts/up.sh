#!/usr/bin/env bash
# THE cluster command: installs dependencies, builds meseta (Release) into build-up/, and
# runs `meseta up`: a local cluster in the foreground (etcd, registry, allocator,
# master-api and one agent). Ctrl-C stops everything it started, containers included.
# State lives under .state/ and is reused by the next run.
#
#   scripts/up.sh [--no-build] [meseta up flags: --agents N, --state-dir DIR, --etcd-port N,
#                  --etcd-peer-port N, --registry-port N, --allocator-port N, --master-port N,
#                  --agent-port N, ...; `build-up/cli/meseta up --help` lists them]
#
# Every flag has an environment twin: MESETA_AGENTS, MESETA_STATE_DIR, MESETA_ETCD_PORT, ...
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=$ROOT/build-up
DO_BUILD=1
ARGS=()
for a in "$@"; do
  case $a in
  --no-build) DO_BUILD=0 ;;
  -h | --help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) ARGS+=("$a") ;;
  esac
done

section() { printf '\n==== %s ====\n' "$*"; }

section "dependencies"
if [[ $(id -u) -eq 0 ]]; then
  scripts/setup-deps.sh
else
  scripts/setup-deps.sh || {
    echo "up.sh: run as root (sudo scripts/up.sh) so missing packages can be installed" >&2
    exit 1
  }
fi

if ((DO_BUILD)); then
  section "build (Release, $BUILD_DIR)"
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMESETA_SANITIZE= >/dev/null
  cmake --build "$BUILD_DIR" -j"$(nproc)"
fi

section "meseta up"
export PATH="$BUILD_DIR/cli:$PATH" # so `meseta` works in the printed tour
exec "$BUILD_DIR/cli/meseta" up --state-dir "${MESETA_STATE_DIR:-$ROOT/.state}" \
  --seccomp-dir "$ROOT/services/agent/runtime/profiles" "${ARGS[@]}"
