# Sourced by compose-test.sh: the steps it runs, against project $PROJECT on $DOCKER_HOST.

now() { date +%s%N; }
since() { echo $((($(date +%s%N) - $1) / 1000000000)); }
since_ms() { echo $((($(date +%s%N) - $1) / 1000000)); }

# A port free on 127.0.0.1 now (Docker publishes it a moment later: a small race,
# reported plainly by `up` if lost).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

compose() { docker-compose -p "$PROJECT" -f "$SRC/deploy/compose.yaml" "$@"; }
cid() { compose ps -q "$1" | head -1; }

# Every container of the project running and, where it has a healthcheck, healthy.
wait_healthy() {
  local limit=$1 t0 ids id st bad
  t0=$(now)
  while :; do
    bad=
    ids=$(compose ps -q)
    for id in $ids; do
      st=$("$DOCKER" inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")
      case "$st" in *" running healthy" | *" running none") ;; *) bad="$bad ${st#/}" ;; esac
    done
    [ -n "$ids" ] && [ -z "$bad" ] && return 0
    if [ "$(since "$t0")" -ge "$limit" ]; then
      say "FAIL: not healthy after $limit s:$bad"
      return 1
    fi
    sleep 1
  done
}

check_image() {
  local version=$1 labels user size
  labels=$("$DOCKER" image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' meseta:dev)
  user=$("$DOCKER" image inspect -f '{{.Config.User}}' meseta:dev)
  size=$("$DOCKER" image inspect -f '{{.Size}}' meseta:dev)
  say "image meseta:dev: $((size / 1000000)) MB, user $user, org.opencontainers.image.version $labels"
  [ "$labels" = "$version" ] || { say "FAIL: image version label \`$labels\`, project $version"; return 1; }
  [ "$user" = meseta ] || { say "FAIL: the image runs as \`$user\`, not meseta"; return 1; }
  local v
  v=$("$DOCKER" run --rm meseta:dev meseta --version 2>&1)
  case "$v" in *"$version"*) ;; *) say "FAIL: meseta --version in the image says \`$v\`"; return 1 ;; esac
}

# Issue 13 point 3: no container is privileged; only the agent runs as root.
check_least_privilege() {
  local id line
  for id in $(compose ps -q); do
    line=$("$DOCKER" inspect -f '{{.Name}} privileged={{.HostConfig.Privileged}} user={{.Config.User}} caps={{.HostConfig.CapAdd}}' "$id")
    case "$line" in
      *privileged=true*) say "FAIL: ${line#/}: privileged"; return 1 ;;
      *_agent_*) case "$line" in *ALL*) say "FAIL: ${line#/}: every capability"; return 1 ;; esac ;;
      *user=meseta*) ;;
      *) say "FAIL: ${line#/}: not the image's non-root user"; return 1 ;;
    esac
  done
}

# Issue 13 point 1: the fresh named volume is the image's uid's.
check_etcd_owner() {
  local owner
  owner=$(compose exec -T etcd stat -c %u:%a /var/lib/meseta/etcd)
  [ "$owner" = "10001:700" ] || { say "FAIL: etcd's data dir is $owner, not 10001:700"; return 1; }
}

# Issue 13 point 4: the task's output reaches the host through the agent's advertised address.
expect_hello() {
  local out rc
  out=$(timeout 120 "$MESETA" --master "127.0.0.1:$API_PORT" run --quiet -- echo hello 2>"$WORK/run.err")
  rc=$?
  if [ "$rc" != 0 ] || [ "$out" != hello ]; then
    say "FAIL: meseta run ($1): exit $rc, printed \`$out\`:"
    cat "$WORK/run.err"
    return 1
  fi
}

# The allocator that reports SERVING (only the leader does).
allocator_leader() {
  local s id
  for s in allocator-a allocator-b; do
    id=$(cid "$s")
    [ -n "$id" ] && "$DOCKER" exec "$id" meseta-probe --timeout 1s --service meseta.v1.Allocator 127.0.0.1:5053 \
      >/dev/null 2>&1 && { echo "$s"; return 0; }
  done
  return 1
}

# Issue 13 point 2: what the leader advertises in the election is its own service name.
check_advertised_leader() {
  local v
  v=$(compose exec -T etcd etcdctl get meseta-allocator/ --prefix --sort-by=CREATE --order=ASCEND \
    --print-value-only | head -1 | tr -d '\r')
  case "$v" in
    allocator-a:5053 | allocator-b:5053) say "the election's leader value: $v" ;;
    *) say "FAIL: the allocator leader advertises \`$v\`"; return 1 ;;
  esac
}

# Restart every service, one container at a time, while meseta-batch runs tasks; no
# task may be lost, every work item completes exactly once.
rolling_upgrade() {
  local n=${MESETA_DEPLOY_TASKS:-150} t0 s id
  t0=$(now)
  "$BATCH" --master "127.0.0.1:$API_PORT" --name roll --tasks "$n" --cmd 'sleep 2' --cpus 0.25 --mem 32 \
    --verbose --timeout 400s >"$WORK/batch.out" 2>"$WORK/batch.err" &
  BATCH_PID=$!
  until grep -q "^launched:" "$WORK/batch.out"; do
    kill -0 "$BATCH_PID" 2>/dev/null || { cat "$WORK/batch.err"; say "FAIL: meseta-batch ended early"; return 1; }
    sleep 0.2
  done
  say "meseta-batch runs $n tasks (sleep 2, 0.25 cpus); restarting every service, one at a time"
  local order="etcd registry allocator-a allocator-b master-api agent"
  for s in $order; do
    for id in $(compose ps -q "$s"); do
      local r0 name
      r0=$(now)
      name=$("$DOCKER" inspect -f '{{.Name}}' "$id")
      "$DOCKER" restart -t 30 "$id" >/dev/null || { say "FAIL: restart $name"; return 1; }
      wait_healthy 180 || return 1
      say "restarted ${name#/}: healthy again in $(since "$r0") s; $(grep -c ': TASK_FINISHED' "$WORK/batch.out") tasks finished so far$(kill -0 "$BATCH_PID" 2>/dev/null || echo ', meseta-batch already done')"
    done
  done
  wait "$BATCH_PID"
  local brc=$?
  BATCH_PID=
  say "meseta-batch exit $brc after $(since "$t0") s: $(grep '^summary:' "$WORK/batch.out")"
  check_batch "$n" || return 1
}

# From meseta-batch's own lines: each task's terminal state, once.
check_batch() {
  local n=$1 i id st fin=0 other=0 missing=0 retried=0 out
  declare -A end
  while read -r id st; do
    end[$id]="${end[$id]:+${end[$id]},}$st"
  done < <(sed -n 's/^task \(roll-[0-9]*\): \(TASK_[A-Z_]*\).*/\1 \2/p' "$WORK/batch.out" |
    grep -E ' TASK_(FINISHED|FAILED|KILLED|LOST|ERROR|DROPPED|GONE|GONE_BY_OPERATOR)$' | sort -u)
  local failed=()
  for ((i = 0; i < n; i++)); do
    id=roll-$i
    case "${end[$id]:-}" in
      TASK_FINISHED) fin=$((fin + 1)) ;;
      "") missing=$((missing + 1)); say "lost: $id has no terminal state the framework saw" ;;
      *,*) say "FAIL: $id ended twice: ${end[$id]}"; return 1 ;;
      *) other=$((other + 1)); failed+=("$i"); say "$id: ${end[$id]} (the framework saw it)" ;;
    esac
  done
  grep -E '^(error|failed):' "$WORK/batch.err" | head -20
  say "work items: $n; finished in the batch $fin, ended otherwise $other (seen by the framework), lost $missing"
  [ "$missing" = 0 ] || { say "FAIL: $missing tasks lost"; return 1; }
  # A task ended by the agent's own restart is reported, not retried by meseta-batch:
  # its work item runs again, once, as a task of its own.
  for i in "${failed[@]}"; do
    out=$(timeout 120 "$MESETA" --master "127.0.0.1:$API_PORT" run --quiet --name "roll-retry-$i" --shell "echo item-$i" 2>>"$WORK/run.err")
    [ "$out" = "item-$i" ] || { say "FAIL: retry of item $i printed \`$out\`"; return 1; }
    retried=$((retried + 1))
  done
  say "work items completed exactly once: $((fin + retried)) of $n ($fin in the batch, $retried retried)"
  [ $((fin + retried)) = "$n" ]
}
