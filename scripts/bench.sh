#!/usr/bin/env bash
# Builds the benchmarks without sanitizers (Release, in build-bench/) and runs one:
#   scripts/bench.sh rpc [bench args...]        e.g. scripts/bench.sh rpc --threads 2
#   scripts/bench.sh resources
# Benchmarks print their figures (with a baseline measured in the same run where there
# is one) and assert nothing. Run them on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/bench.sh NAME [args...] (NAME: $(ls bench | grep -v CMakeLists | tr '\n' ' '))}
shift
[[ -d bench/$name ]] || { echo "bench.sh: no bench/$name" >&2; exit 2; }
scripts/setup-deps.sh >/dev/null
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang >/dev/null
cmake --build build-bench -j"$(nproc)" --target "bench-$name" >/dev/null
export MESETA_BINARY_DIR=$PWD/build-bench # benches that start services find them here
exec "build-bench/bench/$name/bench-$name" "$@"
