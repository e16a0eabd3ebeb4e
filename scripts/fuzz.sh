#!/usr/bin/env bash
# Fuzzes moesweep's parsers and planner with libFuzzer (fuzz/README in the top README, "Fuzzing").
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   # default: 60 s each, every target
#
# Installs clang and libfuzzer-14-dev (idempotent; not in setup.sh's list, the normal build does
# not need them), builds build-fuzz/ with clang++ -DMOESWEEP_FUZZ=ON (ASan + UBSan), then runs each
# target for SECONDS_PER_TARGET on a fresh copy of its seeds in fuzz/corpus/<target>, JOBS targets
# at a time (default 2). Prints executions and crashes per target; exits 1 on any crash and keeps
# the input in build-fuzz/fuzz-out/<target>/ (copy it to fuzz/corpus/<target>/ once fixed, so
# ctest's fuzz.replay.<target> keeps checking it).
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${1:-60}"
[ $# -gt 0 ] && shift
all_targets=(sweep_spec trial_config stage_planner report_line command_template)
targets=("${@:-${all_targets[@]}}")
jobs="${JOBS:-2}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "fuzz.sh: SECONDS_PER_TARGET must be a positive integer, got '$seconds'" >&2
  exit 2
fi

# libclang-rt-14-dev: the sanitizers' runtimes (ASan, UBSan), which clang alone does not bring.
packages=(clang libfuzzer-14-dev libclang-rt-14-dev)
source scripts/apt_install.sh
apt_install "${packages[@]}"

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DMOESWEEP_FUZZ=ON -DMOESWEEP_BUILD_BENCH=OFF \
  "${launcher[@]}" >/dev/null
cmake --build build-fuzz -j"${JOBS:-2}" >/dev/null

out=build-fuzz/fuzz-out
run_one() {
  local t="$1" dir="$out/$1"
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/crashes"
  cp -r "fuzz/corpus/$t/." "$dir/corpus/"
  # -timeout: an input over 10 s is a finding (a hang on the coordinator's thread); the rss limit
  # keeps two targets within a small machine.
  "build-fuzz/fuzz/${t}_fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -dict=fuzz/moesweep.dict -print_final_stats=1 -artifact_prefix="$dir/crashes/" "$dir/corpus" \
    >"$dir/log" 2>&1 || true
}

pids=()
for t in "${targets[@]}"; do
  [ -f "fuzz/${t}_fuzzer.cc" ] || { echo "fuzz.sh: unknown target '$t' (known: ${all_targets[*]})" >&2; exit 2; }
  run_one "$t" &
  pids+=($!)
  if [ "${#pids[@]}" -ge "$jobs" ]; then
    wait "${pids[0]}"
    pids=("${pids[@]:1}")
  fi
done
wait

failed=0
printf '%-18s %8s %12s %8s  %s\n' target seconds executions crashes "corpus (seeds + found)"
for t in "${targets[@]}"; do
  dir="$out/$t"
  # "Done N runs in S second(s)" ends a clean run; after a crash libFuzzer prints only its stats.
  runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$dir/log" | tail -n1)
  [ -n "$runs" ] || runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\)/\1/p' "$dir/log" | tail -n1)
  crashes=$(find "$dir/crashes" -type f | wc -l)
  printf '%-18s %8s %12s %8s  %s\n' "$t" "$seconds" "${runs:-?}" "$crashes" "$(find "$dir/corpus" -type f | wc -l)"
  if [ "$crashes" -gt 0 ] || [ -z "$runs" ]; then
    failed=1
    echo "--- $t: $(find "$dir/crashes" -type f | head -n3 | tr '\n' ' ') (log: $dir/log)"
    grep -m3 -E "invariant broken|ERROR: |runtime error|SUMMARY" "$dir/log" | sed 's/^/    /' || true
  fi
done
exit "$failed"
