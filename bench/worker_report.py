#!/usr/bin/python3
"""Tables of bench/run_worker_bench.sh from its result directory (markdown, on stdout)."""
import glob
import json
import math
import os
import re
import statistics
import sys

OUT = sys.argv[1]
WARMUP_EPOCHS = 1


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def rounds(pattern):
    """Files matching pattern (with {r}) for r = 1, 2, ... in order."""
    files, r = [], 1
    while os.path.exists(os.path.join(OUT, pattern.format(r=r))):
        files.append(os.path.join(OUT, pattern.format(r=r)))
        r += 1
    return files


def epoch_rates(err_file):
    """samples_per_sec of each epoch line on stderr (worker and peer print the same format)."""
    rates = []
    for line in open(err_file):
        m = re.match(r"epoch (\d+) .*samples_per_sec=([0-9.e+]+)", line)
        if m:
            rates.append(float(m.group(2)))
    return rates


def after_warmup(rates):
    # Every epoch has the same number of samples, so samples / seconds over epochs 2.. is the
    # harmonic mean of the per-epoch rates.
    rs = rates[WARMUP_EPOCHS:] or rates
    return len(rs) / sum(1.0 / r for r in rs)


def fmt(x, digits=0):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def ratio_str(x):
    return "n/a" if x is None or math.isnan(x) else f"{x:.2f}×"


def final_metric(json_file, key):
    try:
        d = json.load(open(json_file))
    except (OSError, ValueError):
        return float("nan")
    if "metrics" in d:  # the worker
        return d["metrics"].get(key, float("nan"))
    return d.get(key, float("nan"))  # the peer


print("# moesweep worker benchmark\n")
print("```")
print(open(os.path.join(OUT, "machine.txt")).read().rstrip())
print("```\n")

# ---------------------------------------------------------------------------------------------
print("## 1. Training throughput vs eager PyTorch (Fashion-MNIST 10k, batch 128, d 256, 8 experts top-2, hidden 512)\n")
print("samples/s over epochs 2-4 (epoch 1 is warm-up), median of the rounds; ratio = median of the per-round ratios.\n")
print("| threads | moesweep-worker | eager PyTorch peer | ratio | per-round ratios | val_accuracy after 4 epochs (worker / peer) | target |")
print("|---:|---:|---:|---:|---|---|---|")
for t in (1, 2):
    w_files = rounds(f"worker-e8-t{t}-r{{r}}.err")
    p_files = rounds(f"peer-e8-t{t}-r{{r}}.err")
    n = min(len(w_files), len(p_files))
    if n == 0:
        continue
    w = [after_warmup(epoch_rates(f)) for f in w_files[:n]]
    p = [after_warmup(epoch_rates(f)) for f in p_files[:n]]
    ratios = [a / b for a, b in zip(w, p)]
    r = median(ratios)
    acc_w = median([final_metric(f.replace(".err", ".json"), "val_accuracy") for f in w_files[:n]])
    acc_p = median([final_metric(f.replace(".err", ".json"), "val_accuracy") for f in p_files[:n]])
    met = "met" if r >= 2 else "**missed**"
    print(f"| {t} | {fmt(median(w))} | {fmt(median(p))} | **{ratio_str(r)}** | "
          f"{', '.join(f'{x:.2f}' for x in ratios)} | {acc_w:.4f} / {acc_p:.4f} | ≥ 2× — {met} |")
print()

# ---------------------------------------------------------------------------------------------
print("## 2. 32 vs 8 experts at top-2 (same config, 1 thread)\n")


def steptime_ms(jsonl):
    """Per-step milliseconds of each phase of a moesweep-worker-steptime run, epochs after warm-up."""
    epochs = [json.loads(line) for line in open(jsonl) if line.startswith("{")]
    use = epochs[WARMUP_EPOCHS:] or epochs
    cfg = re.match(r"steptime-([^-.]+)", os.path.basename(jsonl)).group(1)
    c = json.load(open(os.path.join(OUT, f"{cfg}.json")))
    steps = math.ceil(c["train_size"] / c["batch_size"]) * len(use)
    keys = ["gather", "forward", "backward", "grad_norm", "adamw", "seconds"]
    return {k: 1e3 * sum(e[k] for e in use) / steps for k in keys}


def steptime_phases(jsonl):
    """The worker's step by phase. The diversity loss is fused into the expert FFN's forward and
    backward, so its cost is the difference to the same config with diversity_loss_weight 0."""
    ms = steptime_ms(jsonl)
    phases = {
        "full step": ms["seconds"],
        "forward + backward (diversity loss included)": ms["forward"] + ms["backward"],
        "grad norm": ms["grad_norm"],
        "AdamW": ms["adamw"],
        "other (batch gather, timers)": ms["seconds"] - ms["forward"] - ms["backward"] - ms["grad_norm"] - ms["adamw"],
    }
    nodiv = re.sub(r"steptime-([^-.]+)-", r"steptime-\1_nodiv-", jsonl)
    if nodiv != jsonl and os.path.exists(nodiv):
        nd = steptime_ms(nodiv)
        phases["full step with diversity_loss_weight 0"] = nd["seconds"]
        phases["diversity loss (fwd + bwd), by difference"] = ms["seconds"] - nd["seconds"]
    return phases


def peer_phases(json_file):
    d = json.load(open(json_file))
    epochs = d["epochs"][WARMUP_EPOCHS:] or d["epochs"]
    steps = 0
    c = json.load(open(d["config"]))
    steps = math.ceil(c["train_size"] / c["batch_size"]) * len(epochs)
    tot = {k: 0.0 for k in epochs[0]["profile_seconds"]}
    seconds = 0.0
    for e in epochs:
        seconds += e["train_phase_seconds"]
        for k, v in e["profile_seconds"].items():
            tot[k] += v
    ms = {k: 1e3 * v / steps for k, v in tot.items()}
    full = 1e3 * seconds / steps
    return {
        "full step": full,
        "forward + backward (no diversity)": ms["forward"] + ms["backward"],
        "diversity loss (fwd + bwd)": ms["div_forward"] + ms["div_backward"],
        "grad norm": ms["clip"],
        "AdamW": ms["optimizer"] + ms["zero_grad"],
        "other (batch gather, timers)": full - sum(ms.values()),
    }


def phase_table(title, e8_files, e32_files, reader, batch=128):
    n = min(len(e8_files), len(e32_files))
    if n == 0:
        return
    a = [reader(f) for f in e8_files[:n]]
    b = [reader(f) for f in e32_files[:n]]
    print(f"**{title}** (ms per step of {batch} samples, median of {n} run(s); ratio = samples/s at 32 ÷ at 8 "
          "= time at 8 ÷ time at 32, median of the per-round ratios)\n")
    print("| phase | 8 experts | 32 experts | 32/8 throughput ratio |")
    print("|---|---:|---:|---:|")
    for k in a[0]:
        x = median([r[k] for r in a])
        y = median([r[k] for r in b])
        rr = median([p[k] / q[k] for p, q in zip(a, b) if q[k] > 0]) if k in (
            "full step", "forward + backward (no diversity)", "full step with diversity_loss_weight 0") else float("nan")
        print(f"| {k} | {x:.2f} | {y:.2f} | {ratio_str(rr) if not math.isnan(rr) else ''} |")
    print()


w8 = [after_warmup(epoch_rates(f)) for f in rounds("worker-e8-t1-r{r}.err")]
w32 = [after_warmup(epoch_rates(f)) for f in rounds("worker-e32-t1-r{r}.err")]
n = min(len(w8), len(w32))
if n:
    rr = median([b / a for a, b in zip(w8[:n], w32[:n])])
    print("| | 8 experts | 32 experts | ratio | per-round | target |")
    print("|---|---:|---:|---:|---|---|")
    print(f"| moesweep-worker run, samples/s | {fmt(median(w8[:n]))} | {fmt(median(w32[:n]))} | **{ratio_str(rr)}** | "
          f"{', '.join(f'{b / a:.2f}' for a, b in zip(w8[:n], w32[:n]))} | ≥ 0.7× — {'met' if rr >= 0.7 else '**missed**'} |")
    print()

phase_table("Worker step, phase by phase (moesweep-worker-steptime)", rounds("steptime-e8-r{r}.jsonl"),
            rounds("steptime-e32-r{r}.jsonl"), steptime_phases)
phase_table("Eager PyTorch peer, phase by phase (moe_peer.py --profile)", rounds("peerprof-e8-r{r}.json"),
            rounds("peerprof-e32-r{r}.json"), peer_phases)
if os.path.exists(os.path.join(OUT, "steptime-e8_b1024.jsonl")):
    phase_table("Worker step at batch 1024 instead of 128",
                [os.path.join(OUT, "steptime-e8_b1024.jsonl")], [os.path.join(OUT, "steptime-e32_b1024.jsonl")],
                steptime_phases, batch=1024)
g = {}
for e in (8, 32):
    f = os.path.join(OUT, f"gemm-e{e}.jsonl")
    if os.path.exists(f):
        g[e] = json.loads(open(f).readline())
if len(g) == 2:
    print("**Expert GEMMs alone** (the six per-expert products of one step as GroupedFfn runs them, weight "
          "gradients with beta 0; rows split evenly, oneDNN sgemm; ms)\n")
    print("| product | 8 experts (32 rows each) | 32 experts (8 rows each) |")
    print("|---|---:|---:|")
    for k in ("fwd_xW1", "fwd_hW2", "bwd_dW2", "bwd_dh", "bwd_dW1", "bwd_dx", "total"):
        print(f"| {k.replace('_', ' ')} | {g[8][k + '_ms']:.2f} | {g[32][k + '_ms']:.2f} |")
    for k, what in (("bwd_dW2_beta1", "dW2 with beta 1 (accumulate into a zeroed gradient)"),
                    ("bwd_dW1_beta1", "dW1 with beta 1 (accumulate into a zeroed gradient)")):
        if k + "_ms" in g[8]:
            print(f"| *for comparison:* {what} | {g[8][k + '_ms']:.2f} | {g[32][k + '_ms']:.2f} |")
    print()
for e in (8, 32):
    f = os.path.join(OUT, f"perf-e{e}.txt")
    if os.path.exists(f) and os.path.getsize(f) > 0:
        print(f"**perf, {e} experts** (self time of the training loop, bench/worker/perf_split.py)\n")
        print("```")
        print(open(f).read().rstrip())
        print("```\n")

# ---------------------------------------------------------------------------------------------
walls = {}
for kind in ("2x1", "1x2"):
    vals = []
    for f in rounds(f"sweep-{kind}-r{{r}}/wall.txt"):
        secs, rc = open(f).read().split()
        vals.append(float(secs) if rc == "0" else float("nan"))
    walls[kind] = vals
if walls["2x1"] and walls["1x2"]:
    print("## 3. Slots: sweeps/demo.json (27 trials) on one worker\n")
    n = min(len(walls["2x1"]), len(walls["1x2"]))
    a, b = walls["2x1"][:n], walls["1x2"][:n]
    print("| worker | wall time to SWEEP_FINISHED (s) | per round |")
    print("|---|---:|---|")
    print(f"| --slots 2 --threads-per-trial 1 | {fmt(median(a), 1)} | {', '.join(fmt(x, 1) for x in a)} |")
    print(f"| --slots 1 --threads-per-trial 2 | {fmt(median(b), 1)} | {', '.join(fmt(x, 1) for x in b)} |")
    print(f"| ratio (1×2 ÷ 2×1) | **{ratio_str(median([y / x for x, y in zip(a, b)]))}** | |")
    print()

# ---------------------------------------------------------------------------------------------
q = os.path.join(OUT, "quality-run.json")
if os.path.exists(q):
    d = json.load(open(q))["metrics"]
    accs = [float(m.group(1)) for m in re.finditer(r"val_accuracy=([0-9.]+)", open(q.replace(".json", ".err")).read())]
    first = next((i + 1 for i, a in enumerate(accs) if a >= 0.88), None)
    print("## 4. Quality: bench/worker_quality.json (all 60k / 10k Fashion-MNIST, 10 epochs, 1 thread)\n")
    print("| test accuracy | top-5 | first epoch ≥ 88% | training time (s, incl. per-epoch eval) | samples/s | target |")
    print("|---:|---:|---:|---:|---:|---|")
    print(f"| **{d['val_accuracy']:.4f}** | {d['val_top5_accuracy']:.4f} | {first or 'never'} | "
          f"{d['train_seconds']:.1f} | {fmt(d['samples_per_sec'])} | ≥ 0.88 in 10 epochs — "
          f"{'met' if d['val_accuracy'] >= 0.88 else '**missed**'} |")
    print()
    print("per-epoch test accuracy: " + ", ".join(f"{a:.4f}" for a in accs))
