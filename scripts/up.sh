#!/usr/bin/env bash
# THE cluster command: installs dependencies, builds meseta (Release) into build-up/,
# and runs a local single-machine cluster in the foreground. Ctrl-C (or SIGTERM) stops
# everything it started. State lives under .state/ and is reused by the next run.
#
#   scripts/up.sh [--etcd-port N] [--etcd-peer-port N] [--registry-port N] [--allocator-port N]
#                 [--master-port N] [--state-dir DIR] [--no-build]
#
# Environment equivalents: MESETA_ETCD_PORT, MESETA_ETCD_PEER_PORT, MESETA_REGISTRY_PORT,
# MESETA_ALLOCATOR_PORT, MESETA_MASTER_PORT, MESETA_STATE_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

ETCD_PORT=${MESETA_ETCD_PORT:-2379}
REGISTRY_PORT=${MESETA_REGISTRY_PORT:-5052}
ALLOCATOR_PORT=${MESETA_ALLOCATOR_PORT:-5053}
MASTER_PORT=${MESETA_MASTER_PORT:-5050}
ETCD_PEER_PORT=${MESETA_ETCD_PEER_PORT:-2380}
STATE_DIR=${MESETA_STATE_DIR:-$ROOT/.state}
BUILD_DIR=$ROOT/build-up
DO_BUILD=1

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
  --etcd-port) ETCD_PORT=$2; shift 2 ;;
  --etcd-peer-port) ETCD_PEER_PORT=$2; shift 2 ;;
  --registry-port) REGISTRY_PORT=$2; shift 2 ;;
  --allocator-port) ALLOCATOR_PORT=$2; shift 2 ;;
  --master-port) MASTER_PORT=$2; shift 2 ;;
  --state-dir) STATE_DIR=$2; shift 2 ;;
  --no-build) DO_BUILD=0; shift ;;
  -h | --help) usage; exit 0 ;;
  *) echo "up.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
mkdir -p "$STATE_DIR/logs"
STATE_DIR=$(cd "$STATE_DIR" && pwd)
ETCD_URL=http://127.0.0.1:$ETCD_PORT

section() { printf '\n==== %s ====\n' "$*"; }
log() { printf 'up: %s\n' "$*"; }

# ---------------------------------------------------------------------------------------
# Process bookkeeping: every service is started by a start_<name> function that calls
# spawn; stop_all stops them in reverse order of start.
SERVICE_NAMES=()
SERVICE_PIDS=()
SERVICE_INFO=()

# spawn NAME INFO CMD... : runs CMD in the background, output to .state/logs/NAME.log.
# Each service gets its own session (setsid) so a terminal's Ctrl-C reaches only this
# script, which then stops the services in order; setsid does not fork here because a
# background job of a non-interactive shell is never a process-group leader, so $! is
# the service's own pid.
spawn() {
  local name=$1 info=$2
  shift 2
  setsid "$@" >>"$STATE_DIR/logs/$name.log" 2>&1 </dev/null &
  SERVICE_NAMES+=("$name")
  SERVICE_PIDS+=("$!")
  SERVICE_INFO+=("$info")
  log "started $name (pid $!): $*"
}

stop_all() {
  local i pid name n
  for ((i = ${#SERVICE_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${SERVICE_PIDS[i]}
    name=${SERVICE_NAMES[i]}
    kill -0 "$pid" 2>/dev/null || continue
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((n = 0; n < 100; n++)); do # up to 10 s, then SIGKILL
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop in 10 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  SERVICE_PIDS=()
}

STOPPING=0
on_signal() {
  STOPPING=1
  echo
  log "shutting down"
  stop_all
  log "stopped; state kept in $STATE_DIR"
  exit 0
}
trap on_signal INT TERM HUP
trap stop_all EXIT

# wait_for NAME SECONDS CMD... : polls CMD until it succeeds, the service dies, or time runs out.
wait_for() {
  local name=$1 secs=$2 pid=${SERVICE_PIDS[-1]}
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited during start; last lines of $STATE_DIR/logs/$name.log:"
      tail -n 20 "$STATE_DIR/logs/$name.log" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name not ready after ${secs}s; see $STATE_DIR/logs/$name.log"
      exit 1
    fi
    sleep 0.2
  done
}

port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# ---------------------------------------------------------------------------------------
# Services. Add new ones as start_<name> functions and list them in main below.

start_etcd() {
  local name=etcd
  if port_in_use "$ETCD_PORT" || port_in_use "$ETCD_PEER_PORT"; then
    log "port $ETCD_PORT or $ETCD_PEER_PORT is already in use (another etcd or up.sh?);"
    log "choose others with --etcd-port N --etcd-peer-port N"
    exit 1
  fi
  mkdir -p "$STATE_DIR/etcd"
  chmod 700 "$STATE_DIR/etcd"
  spawn "$name" "etcd: client $ETCD_URL, data $STATE_DIR/etcd" \
    etcd --name meseta-local \
    --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "meseta-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new
  wait_for "$name" 30 etcdctl --endpoints "$ETCD_URL" --dial-timeout 1s endpoint health
}

start_registry() {
  local name=registry ready=$STATE_DIR/registry.ready
  if port_in_use "$REGISTRY_PORT"; then
    log "port $REGISTRY_PORT is already in use; choose another with --registry-port N"
    exit 1
  fi
  rm -f "$ready"
  spawn "$name" "meseta-registry: gRPC on 127.0.0.1:$REGISTRY_PORT, records under /meseta in etcd" \
    "$BUILD_DIR/services/registry/meseta-registry" \
    --listen "127.0.0.1:$REGISTRY_PORT" --etcd-endpoints "$ETCD_URL" --ready-file "$ready"
  wait_for "$name" 30 test -s "$ready"
}

start_allocator() {
  local name=allocator ready=$STATE_DIR/allocator.ready
  if port_in_use "$ALLOCATOR_PORT"; then
    log "port $ALLOCATOR_PORT is already in use; choose another with --allocator-port N"
    exit 1
  fi
  rm -f "$ready"
  spawn "$name" "meseta-allocator: gRPC on 127.0.0.1:$ALLOCATOR_PORT (leader through etcd, durable through the registry)" \
    "$BUILD_DIR/services/allocator/meseta-allocator" \
    --listen "127.0.0.1:$ALLOCATOR_PORT" --advertise-address "127.0.0.1:$ALLOCATOR_PORT" \
    --etcd-endpoints "$ETCD_URL" --registry "127.0.0.1:$REGISTRY_PORT" --ready-file "$ready"
  wait_for "$name" 30 test -s "$ready"
}

start_master_api() {
  local name=master-api ready=$STATE_DIR/master-api.ready
  if port_in_use "$MASTER_PORT"; then
    log "port $MASTER_PORT is already in use; choose another with --master-port N"
    exit 1
  fi
  rm -f "$ready"
  spawn "$name" "meseta-master-api: the public API (Scheduler, Operator) on 127.0.0.1:$MASTER_PORT" \
    "$BUILD_DIR/services/master-api/meseta-master-api" \
    --listen "127.0.0.1:$MASTER_PORT" --allocator "127.0.0.1:$ALLOCATOR_PORT" --ready-file "$ready"
  wait_for "$name" 30 test -s "$ready"
}

start_agent() {
  local name=agent ready=$STATE_DIR/agent.ready
  mkdir -p "$STATE_DIR/agent"
  rm -f "$ready"
  spawn "$name" "meseta-agent: runs tasks in containers, work dir $STATE_DIR/agent" \
    "$BUILD_DIR/services/agent/meseta-agent" \
    --work-dir "$STATE_DIR/agent" --allocator "127.0.0.1:$ALLOCATOR_PORT" \
    --seccomp-dir "$ROOT/services/agent/runtime/profiles" --ready-file "$ready"
  # A restarted allocator holds offers until its agents are back (at most 30 s).
  wait_for "$name" 60 test -s "$ready"
}

# ---------------------------------------------------------------------------------------
main() {
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

  section "starting the local cluster (state: $STATE_DIR)"
  start_etcd
  start_registry
  start_allocator
  start_master_api
  start_agent

  section "running"
  local i
  for i in "${!SERVICE_NAMES[@]}"; do
    printf '  %-12s pid %-8s %s\n' "${SERVICE_NAMES[i]}" "${SERVICE_PIDS[i]}" "${SERVICE_INFO[i]}"
  done
  cat <<MSG

  logs:        $STATE_DIR/logs/
  try:         etcdctl --endpoints $ETCD_URL endpoint status -w table
               etcdctl --endpoints $ETCD_URL get --prefix --keys-only /meseta/
  registry:    gRPC with server reflection on 127.0.0.1:$REGISTRY_PORT (meseta.v1.Registry)
  allocator:   127.0.0.1:$ALLOCATOR_PORT (internal: AgentLink, Allocator)
  master-api:  127.0.0.1:$MASTER_PORT: meseta.v1.Scheduler and meseta.v1.Operator, with server
               reflection (any gRPC client can list and call them)
  agent:       id $(cat "$STATE_DIR/agent.ready" 2>/dev/null), sandboxes under $STATE_DIR/agent

  Press Ctrl-C to stop.
MSG

  # Stay in the foreground; if any service dies on its own, stop the others and fail.
  while true; do
    wait -n || true
    ((STOPPING)) && return
    for i in "${!SERVICE_PIDS[@]}"; do
      if ! kill -0 "${SERVICE_PIDS[i]}" 2>/dev/null; then
        log "${SERVICE_NAMES[i]} exited unexpectedly; see $STATE_DIR/logs/${SERVICE_NAMES[i]}.log"
        tail -n 20 "$STATE_DIR/logs/${SERVICE_NAMES[i]}.log" >&2 || true
        exit 1
      fi
    done
  done
}

main
