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
# Every flag has an environment twin: MESETA_UP_AGENTS, MESETA_UP_STATE_DIR, MESETA_UP_ETCD_PORT, ...
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

# Only what `meseta up` runs (and the example framework): no tests, no benchmarks.
TARGETS=(meseta-cli meseta-registry meseta-allocator meseta-master-api meseta-agent meseta-runtime meseta-batch)

if ((DO_BUILD)); then
  section "build (Release, $BUILD_DIR)"
  if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    echo "up.sh: configuring $BUILD_DIR (the first time takes ~20 s; cmake's output: $BUILD_DIR/configure.log)"
  fi
  mkdir -p "$BUILD_DIR"
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMESETA_SANITIZE= >"$BUILD_DIR/configure.log" 2>&1 || {
    cat "$BUILD_DIR/configure.log" >&2
    exit 1
  }
  echo "up.sh: building ${TARGETS[*]}"
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target "${TARGETS[@]}"
fi

section "meseta up"
export PATH="$BUILD_DIR/cli:$PATH" # so `meseta` works in the printed tour
exec "$BUILD_DIR/cli/meseta" up --state-dir "${MESETA_UP_STATE_DIR:-$ROOT/.state}" \
  --seccomp-dir "$ROOT/services/agent/runtime/profiles" "${ARGS[@]}"
