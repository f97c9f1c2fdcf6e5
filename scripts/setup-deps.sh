#!/usr/bin/env bash
# Installs everything meseta needs to build, test and run on Debian 12 (bookworm).
# Idempotent: when every package is already installed it does nothing (no apt at all).
# Run as root (or through sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  clang libclang-rt-14-dev llvm clang-format
  libgrpc-dev protobuf-compiler libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler
  libcurl4-openssl-dev libjansson-dev libseccomp-dev libbpf-dev bpftool libcunit1-dev
  etcd-server etcd-client
  python3 python3-grpcio python3-protobuf python3-grpc-tools
  python3-yaml # tests/deploy/check-manifests.py
  openssl iproute2 ca-certificates git
  crun busybox-static # bench/containers: the OCI runtime baseline and its rootfs
)

log() { printf 'setup-deps: %s\n' "$*"; }

# Node.js and npm (interop tests) come from Debian only when the machine has none:
# a node installed from elsewhere usually bundles its own npm, and Debian's npm would
# conflict with it.
if ! command -v node >/dev/null 2>&1; then
  PACKAGES+=(nodejs)
fi
if ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(npm)
fi
# kubectl (`kubectl kustomize`, for the manifest check) from Debian only when none is
# installed: Debian's kubernetes-client ships /usr/bin/kubectl too.
if ! command -v kubectl >/dev/null 2>&1; then
  PACKAGES+=(kubernetes-client)
fi

# Which packages are not installed yet (dpkg status "install ok installed").
missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  if [[ "$status" != ii* ]]; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  log "all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "setup-deps: missing packages: ${missing[*]}" >&2
  echo "setup-deps: run as root (sudo $0) to install them" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Refresh the package lists when they are older than a day, absent, or do not know
# one of the packages we need.
lists_stale() {
  local newest
  newest=$(find /var/lib/apt/lists -maxdepth 1 -type f -name '*_Packages*' -mtime -1 2>/dev/null | head -n 1)
  [[ -z "$newest" ]]
}
some_not_installable() {
  local p cand
  for p in "${missing[@]}"; do
    cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [[ -z "$cand" || "$cand" == "(none)" ]]; then
      return 0
    fi
  done
  return 1
}
if lists_stale || some_not_installable; then
  log "apt-get update"
  apt-get update
fi

log "installing: ${missing[*]}"
apt-get install -y --no-install-recommends "${missing[@]}"
log "done"
