# Sourced by the coordinator benchmarks.

# build_loadgen ROOT BUILD: configures BUILD (Release, no worker, no tests) when it has no cache
# yet and builds the load generator and the coordinator.
build_loadgen() {
  local root=$1 build=$2
  if [[ ! -f "$build/CMakeCache.txt" ]]; then
    local launcher=()
    command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMOESWEEP_BUILD_WORKER=OFF -DMOESWEEP_BUILD_TESTS=OFF \
      -DMOESWEEP_BUILD_BENCH=ON "${launcher[@]}" >/dev/null
  fi
  cmake --build "$build" -j2 --target moesweep-coordinator-loadgen moesweep-coordinator >/dev/null
}

# results_dir PREFIX: sets OUT to $KEEP_RESULTS (kept) or to a fresh temporary folder removed at exit.
results_dir() {
  if [[ -n "${KEEP_RESULTS:-}" ]]; then
    OUT=$KEEP_RESULTS
    mkdir -p "$OUT"
  else
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/$1-XXXXXX")
    trap 'rm -rf "$OUT"' EXIT
  fi
}
