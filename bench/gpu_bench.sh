#!/usr/bin/env bash
# The built-in trainer on a GPU against eager PyTorch on the same GPU (BENCHMARKS.md, "GPU"), in
# one run: moe_mlp with d_model 256, expert_hidden_dim 512, top-2, AdamW (the other keys as in
# bench/worker_bench.json, i.e. the schema defaults: dropout, balance, sparsity and diversity
# losses, threshold 0.1, clipping 1.0) on random data of Fashion-MNIST's shape (784 features, 10
# classes), 8 and 32 experts at batch 128, 1,024 and 8,192. The peer is bench/moe_peer.py on the
# same config. Prints training samples/s of both (epoch 1 is warm-up; evaluation excluded) and the
# ratio worker / peer.
#
#   WORKER=build-gpu/worker/moesweep-worker PY=python3 bench/gpu_bench.sh     # on the GPU
#   DEVICE=cpu BATCHES=128 EXPERTS=8 bench/gpu_bench.sh                        # a dry run on the CPU
#
# Environment:
#   WORKER     moesweep-worker binary (default <repo>/build/worker/moesweep-worker)
#   PY         python whose torch the peer uses (default /usr/bin/python3 for DEVICE=cpu, else python3)
#   DEVICE     cuda (default) or cpu
#   PRECISION  fp32 (default) or bf16 (both sides: the worker's precision key, the peer's autocast)
#   BATCHES    default "128 1024 8192";  EXPERTS  default "8 32"
#   EPOCHS     default 4 (the first is warm-up)
#   THREADS    intra-op CPU threads of both sides (default 1)
#   OUT        folder for the configs, logs and results.md (default: a temp folder, printed)
# Each run has a timeout of 600 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE=${DEVICE:-cuda}
WORKER=${WORKER:-$ROOT/build/worker/moesweep-worker}
if [[ -z "${PY:-}" ]]; then
  PY=python3
  [[ "$DEVICE" == cpu ]] && PY=/usr/bin/python3
fi
PRECISION=${PRECISION:-fp32}
BATCHES=${BATCHES:-128 1024 8192}
EXPERTS=${EXPERTS:-8 32}
EPOCHS=${EPOCHS:-4}
THREADS=${THREADS:-1}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/moesweep-gpu-bench-XXXXXX")}
mkdir -p "$OUT"

[[ -x "$WORKER" ]] || { echo "gpu_bench.sh: no worker binary at $WORKER (set WORKER)" >&2; exit 1; }
"$PY" -c 'import torch' 2>/dev/null || { echo "gpu_bench.sh: $PY cannot import torch (set PY)" >&2; exit 1; }
if [[ "$DEVICE" == cuda* ]] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_bench.sh: $PY's torch sees no CUDA device" >&2
  exit 1
fi

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "device: $DEVICE, precision: $PRECISION, threads: $THREADS"
  "$PY" -c 'import torch; print("torch (peer):", torch.__version__, "cuda", torch.version.cuda,
             torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'
  echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
} | tee "$OUT/machine.txt" >&2

# Harmonic mean of the per-epoch samples_per_sec after epoch 1 (= samples / seconds, since every
# epoch has the same samples), from the "epoch N ... samples_per_sec=X" lines both sides print.
rate() {
  "$PY" - "$1" <<'EOF'
import re, sys
rates = [float(m.group(2)) for m in (re.search(r"^epoch (\d+) .*samples_per_sec=([0-9.e+]+)", l) for l in open(sys.argv[1]))
         if m and int(m.group(1)) > 1]
print(f"{len(rates) / sum(1 / r for r in rates):.0f}" if rates else "nan")
EOF
}

printf '| experts | batch | moesweep samples/s | eager PyTorch samples/s | ratio |\n|---:|---:|---:|---:|---:|\n' >"$OUT/results.md"
for e in $EXPERTS; do
  for b in $BATCHES; do
    # Enough steps per epoch to time (64 at batch 128, 8 at 8,192), without gigabytes of data.
    n=$(( b * 16 ))
    (( n < 8192 )) && n=8192
    (( n > 65536 )) && n=65536
    name=e$e-b$b
    "$PY" - "$ROOT/bench/worker_bench.json" "$OUT/$name.json" "$e" "$b" "$n" "$EPOCHS" "$DEVICE" "$PRECISION" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
e, b, n, epochs, device, precision = sys.argv[3:9]
c.update({"dataset": "synthetic", "input_dim": 784, "num_classes": 10, "train_size": int(n), "val_size": 1024,
          "num_experts": int(e), "batch_size": int(b), "epochs": int(epochs), "device": device,
          "precision": precision})
c.pop("data_dir", None)
json.dump(c, open(sys.argv[2], "w"), indent=1)
EOF
    echo "== $name: $n samples x $EPOCHS epochs" >&2
    timeout 600 "$WORKER" run "$OUT/$name.json" --threads "$THREADS" >"$OUT/worker-$name.json" 2>"$OUT/worker-$name.err" ||
      { echo "worker run $name failed:" >&2; tail -5 "$OUT/worker-$name.err" >&2; exit 1; }
    timeout 600 "$PY" "$ROOT/bench/moe_peer.py" "$OUT/$name.json" --threads "$THREADS" --device "$DEVICE" \
      --precision "$PRECISION" --json "$OUT/peer-$name.json" >/dev/null 2>"$OUT/peer-$name.err" ||
      { echo "peer run $name failed:" >&2; tail -5 "$OUT/peer-$name.err" >&2; exit 1; }
    w=$(rate "$OUT/worker-$name.err")
    p=$(rate "$OUT/peer-$name.err")
    ratio=$("$PY" -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$w" "$p")
    echo "   moesweep $w samples/s, eager PyTorch $p samples/s, ratio $ratio" >&2
    printf '| %s | %s | %s | %s | %s |\n' "$e" "$b" "$w" "$p" "$ratio" >>"$OUT/results.md"
  done
done
echo "== results ($OUT)" >&2
cat "$OUT/results.md"
