#!/usr/bin/env bash
# The coordinator benchmark in one command: builds what it needs (in build-bench/ unless
# BUILD_DIR says otherwise), runs the C++ load generator against a real moesweep-coordinator
# (RUNS times with reports over ReportProgressStream, as moesweep-worker sends them, alternating
# with RUNS times with unary ReportProgress calls; the table shows the median run of each), runs
# the same workload on Optuna with SQLite
# (1 and 4 processes, Optuna's SQLite defaults and with WAL), and prints one table.
#
#   bench/run_coordinator_bench.sh                 # 32 workers, 5000 trials, 3 runs
#   RUNS=1 OPTUNA_TRIALS=100 bench/run_coordinator_bench.sh --workers 64
#
# Extra arguments go to moesweep-coordinator-loadgen (see its --help). Environment:
#   BUILD_DIR       build directory (default <repo>/build-bench)
#   RUNS            load-generator runs (default 3)
#   OPTUNA_TRIALS   trials per Optuna configuration (default 300)
#   OPTUNA_BUDGET   seconds per Optuna configuration at most (default 45)
#   OPTUNA_WAL      also run Optuna with WAL + synchronous=NORMAL (default 1)
#   KEEP_RESULTS    directory to keep the JSON results in (default: a temp dir, removed)
# Not part of ctest. Every step is bounded (the load generator caps itself at 120 s a run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
RUNS=${RUNS:-3}
OPTUNA_TRIALS=${OPTUNA_TRIALS:-300}
OPTUNA_BUDGET=${OPTUNA_BUDGET:-45}
OPTUNA_WAL=${OPTUNA_WAL:-1}
PY=/usr/bin/python3  # Debian's python, which has python3-optuna (not a pyenv python on PATH).

source "$ROOT/bench/lib.sh"
build_loadgen "$ROOT" "$BUILD"

results_dir moesweep-bench-results

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- server common proto 2>/dev/null || echo ' (server/common/proto modified)')"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"

echo "== moesweep coordinator: $RUNS x 2 runs of the load generator (report stream / unary reports)" >&2
for i in $(seq 1 "$RUNS"); do
  for kind in stream unary; do
    name=loadgen-$i
    flags=()
    [[ $kind == unary ]] && name=loadgen-unary-$i && flags=(--unary-reports)
    timeout 150 "$BUILD/bench/moesweep-coordinator-loadgen" --coordinator "$BUILD/server/moesweep-coordinator" \
      --max-seconds 120 --json "$OUT/$name.json" "${flags[@]}" "$@" >"$OUT/$name.txt" 2>&1 || {
      echo "load generator run $name failed:" >&2
      cat "$OUT/$name.txt" >&2
      exit 1
    }
    grep -E 'trials/s|checks' "$OUT/$name.txt" | sed "s/^/  run $i, $kind reports: /" >&2
  done
done

if ! $PY -c 'import optuna' 2>/dev/null; then
  echo "optuna is missing for $PY: apt-get install -y python3-optuna" >&2
  exit 1
fi
configs=("1 default" "4 default")
[[ "$OPTUNA_WAL" == 1 ]] && configs+=("1 wal" "4 wal")
for c in "${configs[@]}"; do
  read -r procs mode <<<"$c"
  flags=()
  [[ "$mode" == wal ]] && flags=(--sqlite-wal)
  echo "== optuna: $procs process(es), sqlite $mode, $OPTUNA_TRIALS trials (at most ${OPTUNA_BUDGET}s)" >&2
  timeout $((OPTUNA_BUDGET + 150)) $PY "$ROOT/bench/optuna_peer.py" --procs "$procs" --trials "$OPTUNA_TRIALS" \
    --budget "$OPTUNA_BUDGET" --json "$OUT/optuna-$procs-$mode.json" "${flags[@]}" >&2
done

$PY "$ROOT/bench/report.py" "$OUT"
