#!/bin/bash
# The `deploy` test (issue 13): deploy/compose.yaml brought up on a private Docker engine
# and used as a user would. docs/deploy.md tells what it runs and its figures.
#   cd build && ctest -L deploy --output-on-failure
# Exit 0: passed; 77: skipped (dockerd cannot start here, said why); else failed.
set -u -o pipefail
SRC=${MESETA_SOURCE_DIR:?set by CTest}
BIN=${MESETA_BINARY_DIR:?set by CTest}
. "$SRC/tests/deploy/docker-engine.sh"
. "$SRC/tests/deploy/compose-lib.sh"

MESETA=$BIN/cli/meseta
BATCH=$BIN/examples/c/meseta-batch
for b in "$MESETA" "$BATCH"; do
  [ -x "$b" ] || { say "FAIL: $b is not built (cmake --build build --target meseta-cli meseta-batch)"; exit 1; }
done

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "${BATCH_PID:-}" ]; then
    touch "$WORK/stop"
    pkill -TERM -P "$BATCH_PID" 2>/dev/null
    wait "$BATCH_PID" 2>/dev/null
  fi
  if [ -n "${DOCKER_HOST:-}" ] && [ -n "$ENGINE_PID" ]; then
    if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
      say "failed: the services' last log lines"
      compose logs --no-color --tail=15 2>&1 | tail -120
    fi
    compose down -v --remove-orphans -t 20 >/dev/null 2>&1
    left=$("$DOCKER" volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | wc -l)
    [ "$left" = 0 ] || { say "FAIL: $left volumes left after down -v"; rc=1; }
  fi
  engine_stop
  rm -rf "$WORK"
  exit "$rc"
}
WORK=$(mktemp -d)
trap cleanup EXIT
# The CLI and meseta-batch read MESETA_* and ~/.config/meseta: none of the caller's.
for v in $(compgen -e | grep '^MESETA_' | grep -v -E '^MESETA_(SOURCE_DIR|BINARY_DIR|DEPLOY_[A-Z_]+)$'); do
  unset "$v"
done
export XDG_CONFIG_HOME=$WORK/config
trap 'exit 1' INT TERM

engine_start || exit $?
engine_base_image || { say "FAIL: no debian:12 base image"; exit 1; }

# ---- the image ----
t0=$(now)
VERSION=$(sed -n 's/^project(meseta VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
REVISION=$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)
say "building deploy/Dockerfile (version $VERSION)"
"$DOCKER" build --network host -f "$SRC/deploy/Dockerfile" -t meseta:dev --build-arg VERSION="$VERSION" \
  --build-arg REVISION="$REVISION" "$SRC" >"$WORK/build.log" 2>&1 ||
  { tail -30 "$WORK/build.log"; say "FAIL: the image does not build"; exit 1; }
check_image "$VERSION" || exit 1
say "image built in $(since "$t0") s"

# ---- up ----
API_PORT=$(free_port) AGENT_PORT=$(free_port)
export MESETA_COMPOSE_API_PORT=$API_PORT MESETA_COMPOSE_AGENT_PORT=$AGENT_PORT
PROJECT=msdeploy$$
t0=$(now)
compose up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; say "FAIL: compose up"; exit 1; }
wait_healthy 240 || exit 1
say "every service healthy $(since "$t0") s after up (api 127.0.0.1:$API_PORT, agent 127.0.0.1:$AGENT_PORT)"
check_least_privilege || exit 1
check_etcd_owner || exit 1

# ---- a task from the host ----
t0=$(now)
expect_hello "first" || exit 1
say "meseta run -- echo hello printed hello in $(since "$t0") s"

# ---- failover ----
check_advertised_leader || exit 1
leader=$(allocator_leader) || { say "FAIL: no allocator leads"; exit 1; }
standby=allocator-a
[ "$leader" = allocator-a ] && standby=allocator-b
say "killing the leader $leader"
t0=$(now)
"$DOCKER" kill "$(cid "$leader")" >/dev/null
until [ "$(allocator_leader)" = "$standby" ]; do
  [ "$(since "$t0")" -lt 60 ] || { say "FAIL: $standby did not take over in 60 s"; exit 1; }
  sleep 0.2
done
say "$standby leads and serves $(since_ms "$t0") ms after \`docker kill\` began"
t1=$(now)
expect_hello "after failover" || exit 1
say "a second task ran and printed hello in $(since_ms "$t1") ms ($(since_ms "$t0") ms after the kill)"
check_advertised_leader || exit 1
compose start "$leader" >/dev/null 2>&1
wait_healthy 120 || exit 1

# ---- rolling upgrade under a framework ----
rolling_upgrade || exit 1
say "PASS"
