#!/usr/bin/env bash
# The long soak in one command: a staged sweep of short command trials (a baseline and 3 stages,
# 3 seeds) run by the real coordinator and 3 workers while a seeded schedule SIGKILLs the
# coordinator and the workers and restarts them; then the database is checked (every trial
# SUCCEEDED exactly once with what its trainer reported, events 1..N without a gap, every stage
# decision recomputed from the stored results, PRAGMA integrity_check). ctest runs the short
# version (tests/soak/soak_test.cc); see BENCHMARKS.md, "Soak".
#
#   bench/soak.sh --kills 40 --trials 3000            # half the kills (rounded up) the coordinator's
#   bench/soak.sh --kills 40 --trials 3000 --seed 7 --dir /tmp/soak-7
#
# Extra arguments go to moesweep-soak (see its --help). Environment:
#   BUILD_DIR   build directory (default <repo>/build-soak; configured without LibTorch)
# Not part of ctest. Bounded: moesweep-soak cuts itself off after --max-seconds (default 1800).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-soak}

if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DMOESWEEP_WORKER_LIBTORCH=OFF -DMOESWEEP_BUILD_TESTS=ON \
    -DMOESWEEP_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
fi
cmake --build "$BUILD" -j2 --target moesweep-soak moesweep-coordinator moesweep-worker moesweep >/dev/null

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)," \
  "nproc $(nproc), load average $(cut -d' ' -f1-3 /proc/loadavg)"
timeout 2000 "$BUILD/tests/soak/moesweep-soak" "$@"
