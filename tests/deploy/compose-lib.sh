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
      case "$st" in
        *" running healthy" | *" running none") ;;
        *" exited "* | *" dead "* | *" unhealthy")
          say "FAIL: ${st#/}: $("$DOCKER" logs --tail 3 "$id" 2>&1 | tr '\n' ' ' | cut -c1-400)"
          return 1
          ;;
        *) bad="$bad ${st#/}" ;;
      esac
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

# The framework side of the rolling upgrade: rounds of meseta-batch (a framework each,
# roll<R>-<i> tasks), back to back until $WORK/stop exists, so one runs at every restart.
# A round that launched nothing (its subscription refused while, e.g., etcd restarts)
# is tried again: its work never started. $WORK/rounds: "R FILE EXIT" of rounds that ran.
batch_rounds() {
  local r=0 k=0 f rc
  while [ ! -e "$WORK/stop" ]; do
    f=$WORK/batch-$r-$k
    "$BATCH" --master "127.0.0.1:$API_PORT" --name "roll$r" --tasks "$ROUND_TASKS" --cmd 'sleep 1' --cpus 0.25 \
      --mem 32 --verbose --timeout 300s >"$f.out" 2>"$f.err"
    rc=$?
    if grep -qs '^summary: launched=0 ' "$f.out" || ! grep -qs '^summary:' "$f.out"; then
      echo "roll$r attempt $k launched nothing (exit $rc): $(grep -v '^warning' "$f.err" | head -1)" >>"$WORK/unstarted"
      k=$((k + 1))
      sleep 0.5
      continue
    fi
    echo "$r $f $rc" >>"$WORK/rounds"
    r=$((r + 1)) k=0
  done
}

# Until the round in progress has tasks running (up to 30 s), so that each restart
# meets running tasks; prints how many.
tasks_running() {
  local t0 f n=0
  t0=$(now)
  while [ "$(since "$t0")" -lt 30 ]; do
    # shellcheck disable=SC2012 # our own file names
    f=$(ls -t "$WORK"/batch-*.out 2>/dev/null | head -1)
    if [ -n "$f" ]; then
      n=$(sed -n 's/^task \([^:]*\): \(TASK_[A-Z_]*\).*/\1 \2/p' "$f" | awk '
        $2 == "TASK_RUNNING" { run[$1] = 1 }
        $2 ~ /^TASK_(FINISHED|FAILED|KILLED|LOST|ERROR|DROPPED|GONE|GONE_BY_OPERATOR)$/ { done[$1] = 1 }
        END { n = 0; for (t in run) if (!(t in done)) n++; print n }')
      [ "$n" -gt 0 ] && break
    fi
    sleep 0.2
  done
  echo "$n"
}

# Restart every service, one container at a time, while frameworks run tasks; no task
# may be lost, every work item completes exactly once.
rolling_upgrade() {
  local t0 s id
  ROUND_TASKS=${MESETA_DEPLOY_ROUND_TASKS:-40}
  t0=$(now)
  : >"$WORK/rounds"
  : >"$WORK/unstarted"
  batch_rounds &
  BATCH_PID=$!
  until grep -qs "^launched:" "$WORK/batch-0-0.out"; do
    kill -0 "$BATCH_PID" 2>/dev/null || { cat "$WORK"/batch-0-0.err; say "FAIL: meseta-batch ended early"; return 1; }
    sleep 0.2
  done
  say "meseta-batch rounds of $ROUND_TASKS tasks (sleep 1, 0.25 cpus) run; restarting every container, one at a time"
  for s in etcd registry allocator-a allocator-b master-api agent; do
    for id in $(compose ps -q "$s"); do
      local r0 name running
      running=$(tasks_running)
      r0=$(now)
      name=$("$DOCKER" inspect -f '{{.Name}}' "$id")
      "$DOCKER" restart -t 30 "$id" >/dev/null || { say "FAIL: restart $name"; return 1; }
      wait_healthy 180 || return 1
      say "restarted ${name#/} with $running tasks running: healthy again in $(since "$r0") s; rounds done: $(wc -l <"$WORK/rounds"), tasks finished: $(cat "$WORK"/batch-*.out | grep -c ': TASK_FINISHED')"
    done
  done
  touch "$WORK/stop"
  wait "$BATCH_PID"
  BATCH_PID=
  say "restarts done after $(since "$t0") s; meseta-batch rounds (round, exit, summary):"
  local r f rc
  while read -r r f rc; do
    say "  roll$r exit $rc: $(grep '^summary:' "$f.out"), stream failovers $(grep -c '^failover:' "$f.out")"
  done <"$WORK/rounds"
  while read -r line; do say "  $line"; done <"$WORK/unstarted"
  while read -r r f rc; do
    check_batch "roll$r" "$f.out" "$f.err" || return 1
  done <"$WORK/rounds"
  say "work items: $ITEMS in $(wc -l <"$WORK/rounds") rounds ($(wc -l <"$WORK/unstarted") attempts launched nothing); finished in their batch $FIN, ended otherwise $OTHER (seen by the framework, run again once: $RETRIED), lost 0"
  [ $((FIN + RETRIED)) = "$ITEMS" ] || { say "FAIL: $((FIN + RETRIED)) of $ITEMS work items completed"; return 1; }
}

# From one meseta-batch's own lines: each task's terminal state, seen once.
ITEMS=0 FIN=0 OTHER=0 RETRIED=0
check_batch() {
  local name=$1 out=$2 err=$3 n i id
  declare -A end
  n=$(sed -n 's/^summary: launched=\([0-9]*\).*/\1/p' "$out")
  [ -n "$n" ] || { say "FAIL: $name printed no summary"; cat "$err"; return 1; }
  while read -r id st; do
    end[$id]="${end[$id]:+${end[$id]},}$st"
  done < <(sed -n "s/^task \\($name-[0-9]*\\): \\(TASK_[A-Z_]*\\).*/\\1 \\2/p" "$out" |
    grep -E ' TASK_(FINISHED|FAILED|KILLED|LOST|ERROR|DROPPED|GONE|GONE_BY_OPERATOR)$' | sort -u)
  local failed=()
  for ((i = 0; i < ROUND_TASKS; i++)); do
    id=$name-$i
    case "${end[$id]:-}" in
      TASK_FINISHED) FIN=$((FIN + 1)) ;;
      "") say "FAIL: lost: $id has no terminal state $name saw"; return 1 ;;
      *,*) say "FAIL: $id ended twice: ${end[$id]}"; return 1 ;;
      *) OTHER=$((OTHER + 1)); failed+=("$i"); say "$id: ${end[$id]} (its framework saw it)" ;;
    esac
  done
  ITEMS=$((ITEMS + ROUND_TASKS))
  grep -E '^error:' "$err" && { say "FAIL: $name reported errors"; return 1; }
  # meseta-batch reports a task the agent's restart ended and does not retry it: the
  # work item runs again, once, as a task of its own.
  local out1
  for i in "${failed[@]}"; do
    out1=$(timeout 120 "$MESETA" --master "127.0.0.1:$API_PORT" run --quiet --name "$name-retry-$i" --shell "echo item-$i" 2>>"$WORK/run.err")
    [ "$out1" = "item-$i" ] || { say "FAIL: the retry of $name-$i printed \`$out1\`"; return 1; }
    RETRIED=$((RETRIED + 1))
  done
}
