# Sourced by the deploy tests: a private Docker engine (Debian's docker.io), its own
# socket, data root, exec root, pidfile and networks, so it never meets a system Docker.
#   engine_start   -> sets DOCKER_HOST; returns 77 (skip) when dockerd cannot start
#   engine_stop    -> stops it (call from a trap)
#   engine_base_image -> `debian:12` made with debootstrap + docker import when missing
# The data root lives in a cache outside the checkout (MESETA_DEPLOY_CACHE, default
# /var/cache/meseta/deploy) so warm runs reuse layers; one engine at a time uses it (flock).

DEPLOY_CACHE=${MESETA_DEPLOY_CACHE:-/var/cache/meseta/deploy}
ENGINE_RUN=/run/msd-$$ # exec root, socket and pidfile: short (unix socket paths)
DOCKER=/usr/bin/docker  # Debian's client, matching its daemon (not /usr/local/bin/docker)
ENGINE_PID=

say() { printf '%s deploy: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# Debian's docker.io, docker-compose and debootstrap, when missing (apt-get, as root).
engine_packages() {
  local missing=()
  [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    say "${missing[*]} missing and not root to install them"
    return 1
  fi
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
}

engine_start() {
  if ! engine_packages; then
    say "SKIP: Debian's docker.io / docker-compose / debootstrap are missing and could not be installed"
    return 77
  fi
  if [ "$(id -u)" != 0 ]; then
    say "SKIP: dockerd needs root"
    return 77
  fi
  mkdir -p "$DEPLOY_CACHE" "$ENGINE_RUN"
  exec 9>"$DEPLOY_CACHE/engine.lock"
  if ! flock -w 1800 9; then
    say "SKIP: another run holds $DEPLOY_CACHE/engine.lock"
    return 77
  fi
  export DOCKER_HOST="unix://$ENGINE_RUN/docker.sock" DOCKER_API_VERSION=1.41
  # --bridge none: no docker0 (the build uses the host's network); Compose's project
  # network comes from its own pool. --iptables=false: host rules stay untouched;
  # published ports go through docker-proxy.
  /usr/sbin/dockerd --host "$DOCKER_HOST" --data-root "$DEPLOY_CACHE/docker" --exec-root "$ENGINE_RUN/exec" \
    --pidfile "$ENGINE_RUN/dockerd.pid" --bridge none --iptables=false --ip-masq=false \
    --default-address-pool base=10.213.0.0/16,size=24 --log-level warn \
    >"$ENGINE_RUN/dockerd.log" 2>&1 &
  ENGINE_PID=$!
  local i
  for i in $(seq 1 120); do
    if "$DOCKER" version >/dev/null 2>&1; then
      say "dockerd $ENGINE_PID up after $((i / 2)) s ($DOCKER_HOST, data root $DEPLOY_CACHE/docker)"
      return 0
    fi
    if ! kill -0 "$ENGINE_PID" 2>/dev/null; then
      say "SKIP: dockerd cannot start:"
      tail -5 "$ENGINE_RUN/dockerd.log"
      ENGINE_PID=
      return 77
    fi
    sleep 0.5
  done
  say "SKIP: dockerd did not answer in 60 s:"
  tail -5 "$ENGINE_RUN/dockerd.log"
  engine_stop
  return 77
}

engine_stop() {
  [ -n "$ENGINE_PID" ] || return 0
  kill -TERM "$ENGINE_PID" 2>/dev/null
  local i
  for i in $(seq 1 60); do
    kill -0 "$ENGINE_PID" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL "$ENGINE_PID" 2>/dev/null
  wait "$ENGINE_PID" 2>/dev/null
  ENGINE_PID=
  umount "$ENGINE_RUN"/exec/netns/* 2>/dev/null
  rm -rf "$ENGINE_RUN"
  say "dockerd stopped"
}

# debian:12 cannot be pulled (no registry is reachable): debootstrap it once, cache the
# tarball, import it.
engine_base_image() {
  "$DOCKER" image inspect debian:12 >/dev/null 2>&1 && return 0
  local tar="$DEPLOY_CACHE/debian-12.tar"
  if [ ! -s "$tar" ]; then
    say "debootstrap --variant=minbase bookworm (once; cached in $tar)"
    local root="$DEPLOY_CACHE/rootfs.$$"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$DEPLOY_CACHE/debootstrap.log" 2>&1 ||
      { tail -5 "$DEPLOY_CACHE/debootstrap.log"; rm -rf "$root"; return 1; }
    # Like Debian's official image: no package lists or downloaded .debs (~80 MB).
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
    tar -C "$root" -c . >"$tar.tmp" && mv "$tar.tmp" "$tar"
    rm -rf "$root"
  fi
  "$DOCKER" import "$tar" debian:12 >/dev/null && say "imported debian:12 from $tar"
}
