#!/usr/bin/env bash
# The worker benchmarks in one command (see BENCHMARKS.md, "Worker"). Not part of ctest.
#
#   bench/run_worker_bench.sh            # everything, about 10-15 minutes on 2 shared cores
#   ROUNDS=1 SLOT_ROUNDS=0 QUALITY=0 PERF=0 bench/run_worker_bench.sh   # a quick look (~2 minutes)
#
# What it runs (each measurement alternates between the two sides, ROUNDS times; the table gives
# medians):
#   1. throughput  moesweep-worker run bench/worker_bench.json vs the eager PyTorch peer
#                  bench/moe_peer.py on the same JSON, 1 and 2 threads (epoch 1 is warm-up; the
#                  figure is training samples/s over epochs 2-4, evaluation and loading excluded)
#   2. scaling     the same config with num_experts 32: the worker, the worker's step timed phase
#                  by phase (bench/worker/step_timer.cc; also with diversity_loss_weight 0, to
#                  show the fused diversity loss by difference), and the peer with --profile
#   3. slots       sweeps/demo.json on a fresh coordinator (temp db, free loopback port) with one
#                  worker of 2 slots x 1 thread vs 1 slot x 2 threads, wall time of `moesweep submit
#                  --watch` (SLOT_ROUNDS times each, alternating)
#   4. quality     bench/worker_quality.json: moe_mlp on all of Fashion-MNIST, 10 epochs, 1 thread
#
# Environment:
#   BUILD_DIR     main build directory (default <repo>/build-wbench; configured and built if needed)
#   ROUNDS        rounds of 1 and 2 (default 3)
#   SLOT_ROUNDS   rounds of 3 (default 1; 0 skips it)
#   QUALITY       1 runs 4 (default 1)
#   PERF          1 adds perf profiles of the step split by code (default 1; needs `perf`)
#   KEEP_RESULTS  directory to keep the raw logs and JSON in (default: a temp dir, removed)
# Every run has a timeout, so the whole thing is bounded even on a badly overloaded machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-wbench}
ROUNDS=${ROUNDS:-3}
SLOT_ROUNDS=${SLOT_ROUNDS:-1}
QUALITY=${QUALITY:-1}
PERF=${PERF:-1}
PY=/usr/bin/python3  # Debian's python with python3-torch 1.13 (the LibTorch the worker links), not pyenv's.

if ! $PY -c 'import torch, numpy' 2>/dev/null; then
  echo "$PY cannot import torch and numpy: apt-get install -y python3-torch python3-numpy" >&2
  exit 1
fi

# --- build -----------------------------------------------------------------------------------
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DMOESWEEP_BUILD_TESTS=OFF "${launcher[@]}" >/dev/null
fi
echo "== building moesweep-worker, moesweep-coordinator, moesweep in $BUILD" >&2
cmake --build "$BUILD" -j2 --target moesweep-worker moesweep-coordinator moesweep moesweep-worker-steptime >/dev/null
WORKER=$BUILD/worker/moesweep-worker
STEPTIME=$BUILD/bench/moesweep-worker-steptime
COORD=$BUILD/server/moesweep-coordinator
CLI=$BUILD/client/moesweep

if [[ -n "${KEEP_RESULTS:-}" ]]; then
  OUT=$KEEP_RESULTS
  mkdir -p "$OUT"
else
  OUT=$(mktemp -d "${TMPDIR:-/tmp}/moesweep-worker-bench-XXXXXX")
  trap 'rm -rf "$OUT"' EXIT
fi

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- worker common 2>/dev/null || echo ' (worker/common modified)')"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
  echo "torch (peer): $($PY -c 'import torch; print(torch.__version__)')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"

# Configs: bench/worker_bench.json and one-key variants of it (both sides read the same file).
variant() {  # variant NAME KEY=JSON...
  local name=$1
  shift
  $PY - "$ROOT/bench/worker_bench.json" "$OUT/$name.json" "$@" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    c[k] = json.loads(v)
json.dump(c, open(sys.argv[2], "w"), indent=1)
EOF
}
variant e8
variant e32 num_experts=32
variant e8_nodiv diversity_loss_weight=0
variant e32_nodiv num_experts=32 diversity_loss_weight=0
variant e8_b1024 batch_size=1024
variant e32_b1024 num_experts=32 batch_size=1024

log() { echo "   $*" >&2; }
worker_run() {  # worker_run CONFIG THREADS NAME
  timeout 300 "$WORKER" run "$OUT/$1.json" --threads "$2" >"$OUT/$3.json" 2>"$OUT/$3.err" ||
    { echo "worker run $3 failed:" >&2; cat "$OUT/$3.err" >&2; exit 1; }
  log "$3: $(grep -o 'samples_per_sec=[0-9.]*' "$OUT/$3.err" | cut -d= -f2 | tr '\n' ' ')"
}
peer_run() {  # peer_run CONFIG THREADS NAME [ARGS...]
  local cfg=$1 threads=$2 name=$3
  shift 3
  timeout 400 $PY "$ROOT/bench/moe_peer.py" "$OUT/$cfg.json" --threads "$threads" "$@" --json "$OUT/$name.json" \
    >/dev/null 2>"$OUT/$name.err" || { echo "peer run $name failed:" >&2; cat "$OUT/$name.err" >&2; exit 1; }
  log "$name: $(grep -o 'samples_per_sec=[0-9.]*' "$OUT/$name.err" | cut -d= -f2 | tr '\n' ' ')"
}
steptime_run() {  # steptime_run CONFIG NAME [ARGS...]
  local cfg=$1 name=$2
  shift 2
  timeout 300 "$STEPTIME" "$OUT/$cfg.json" --threads 1 "$@" >"$OUT/$name.jsonl" 2>"$OUT/$name.err" ||
    { echo "step timer $name failed:" >&2; cat "$OUT/$name.err" >&2; exit 1; }
}

# --- 1 + 2: throughput and expert scaling ------------------------------------------------------
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r/$ROUNDS: throughput (1 and 2 threads) and 8 vs 32 experts (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  worker_run e8 1 "worker-e8-t1-r$r"
  peer_run e8 1 "peer-e8-t1-r$r"
  worker_run e8 2 "worker-e8-t2-r$r"
  peer_run e8 2 "peer-e8-t2-r$r"
  worker_run e32 1 "worker-e32-t1-r$r"
  steptime_run e8 "steptime-e8-r$r"
  steptime_run e32 "steptime-e32-r$r"
  # The diversity loss is fused into the expert FFN: its cost is the difference to these.
  steptime_run e8_nodiv "steptime-e8_nodiv-r$r"
  steptime_run e32_nodiv "steptime-e32_nodiv-r$r"
  peer_run e8 1 "peerprof-e8-r$r" --profile --epochs 3
  peer_run e32 1 "peerprof-e32-r$r" --profile --epochs 3
done
echo "== expert GEMMs alone, and the step at batch 1024" >&2
steptime_run e8 gemm-e8 --gemm-probe
steptime_run e32 gemm-e32 --gemm-probe
steptime_run e8_b1024 steptime-e8_b1024
steptime_run e32_b1024 steptime-e32_b1024
if [[ "$PERF" == 1 ]] && command -v perf >/dev/null; then
  echo "== perf profiles of the step (8 and 32 experts)" >&2
  for e in 8 32; do
    # -D skips the dataset load; failures (e.g. perf_event_paranoid) only lose this section.
    if timeout 120 perf record -q -D 2500 -F 999 -o "$OUT/perf-e$e.data" "$STEPTIME" "$OUT/e$e.json" --threads 1 \
      --epochs 4 >/dev/null 2>"$OUT/perf-e$e.err"; then
      $PY "$ROOT/bench/worker/perf_split.py" "$OUT/perf-e$e.data" >"$OUT/perf-e$e.txt" 2>/dev/null || true
    fi
    rm -f "$OUT/perf-e$e.data"
  done
fi

# --- 3: slots ----------------------------------------------------------------------------------
sweep_run() {  # sweep_run SLOTS THREADS NAME
  local dir=$OUT/$3 port cpid wpid start end rc
  mkdir -p "$dir"
  port=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$COORD" --listen "127.0.0.1:$port" --db "$dir/sweeps.db" >"$dir/coordinator.log" 2>&1 &
  cpid=$!
  for _ in $(seq 50); do "$CLI" health --coordinator "127.0.0.1:$port" --timeout 1 >/dev/null 2>&1 && break; sleep 0.1; done
  "$WORKER" --coordinator "127.0.0.1:$port" --slots "$1" --threads-per-trial "$2" --name bench >"$dir/worker.log" 2>&1 &
  wpid=$!
  start=$(date +%s.%N)
  rc=0
  timeout 480 "$CLI" submit "$ROOT/sweeps/demo.json" --watch --coordinator "127.0.0.1:$port" >"$dir/watch.log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  kill "$wpid" 2>/dev/null || true
  wait "$wpid" 2>/dev/null || true
  kill "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true
  $PY -c 'import sys; print(float(sys.argv[1]) - float(sys.argv[2]), sys.argv[3])' "$end" "$start" "$rc" >"$dir/wall.txt"
  log "$3: $(cat "$dir/wall.txt") (seconds, exit code)"
}
for r in $(seq 1 "$SLOT_ROUNDS"); do
  echo "== round $r/$SLOT_ROUNDS: sweeps/demo.json, 2 slots x 1 thread vs 1 slot x 2 threads (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  if (( r % 2 == 1 )); then
    sweep_run 2 1 "sweep-2x1-r$r"
    sweep_run 1 2 "sweep-1x2-r$r"
  else
    sweep_run 1 2 "sweep-1x2-r$r"
    sweep_run 2 1 "sweep-2x1-r$r"
  fi
done

# --- 4: quality --------------------------------------------------------------------------------
if [[ "$QUALITY" == 1 ]]; then
  echo "== quality: bench/worker_quality.json (all of Fashion-MNIST, 10 epochs, 1 thread)" >&2
  cp "$ROOT/bench/worker_quality.json" "$OUT/quality.json"
  worker_run quality 1 quality-run
fi

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
$PY "$ROOT/bench/worker_report.py" "$OUT"
