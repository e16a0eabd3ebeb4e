"""A stand-in for a user's training program, for the end-to-end tests of command trainers.

Usage: fake_trainer.py TRIAL_NAME key=value ...   (the config also comes from MOESWEEP_CONFIG_FILE)

What it does is chosen by the config key "behaviour":
  ok     reports `epochs` epochs; val_accuracy is a known function of width, temp and seed
  crash  reports one epoch, prints a traceback to stderr and exits 3
  hang   reports one epoch and then sleeps forever
  slow   starts a child process, writes both pids to $MOESWEEP_OUTPUT_DIR/pids, reports every 0.1 s
  gpus   reports the CUDA_VISIBLE_DEVICES it got, and when it ran
  noisy  malformed, huge and non-finite report lines, then a good one
  nan    a NaN objective
  experts  like ok, plus val_loss and two MoE layers' expert_stats per epoch, sleeping
           `epoch_sleep` seconds (default 0) after each epoch (the dashboard's tests)
Standard library only.
"""
import json
import math
import os
import subprocess
import sys
import time


def report(step, metrics, final=False):
    print("@moesweep " + json.dumps({"step": step, "metrics": metrics, "final": final}), flush=True)


def expert_stats(cfg, epoch):
    """Two layers of `experts` experts; how skewed the routing is depends on temp."""
    n = int(cfg.get("experts", 4))
    temp = float(cfg.get("temp", 0.7))
    layers = []
    for layer in range(2):
        raw = [math.exp(-(e + layer) / (temp * 4 + 0.1 * epoch)) for e in range(n)]
        usage = [r / sum(raw) for r in raw]
        importance = [0.5 * u + 0.5 / n for u in usage]
        entropy = -sum(u * math.log(u) for u in usage) / math.log(n)
        layers.append({"layer": layer, "usage": usage, "importance": importance, "activation_rate": 0.8 + 0.02 * layer,
                       "gate_weight_variance": 0.01, "router_entropy": entropy})
    # Layer 0 also says which of 3 classes each expert receives (class c prefers expert c % n).
    layers[0]["class_routing"] = [[0.7 if e == c % n else 0.3 / (n - 1) for e in range(n)] for c in range(3)]
    return layers


def accuracy(cfg):
    width = float(cfg.get("width", 64))
    temp = float(cfg.get("temp", 0.7))
    return 0.9 - 0.05 * abs(math.log2(width) - 6) - 0.2 * abs(temp - 0.7) + 0.001 * int(cfg["seed"])


def main():
    with open(os.environ["MOESWEEP_CONFIG_FILE"]) as f:
        cfg = json.load(f)
    # The command line carries the same values as the config file.
    for arg in sys.argv[2:]:
        key, _, value = arg.partition("=")
        if key in cfg and str(cfg[key]) != value and json.dumps(cfg[key]) != value:
            print(f"argv {arg} disagrees with the config file ({cfg[key]!r})", file=sys.stderr)
            sys.exit(4)
    behaviour = cfg.get("behaviour", "ok")
    epochs = int(cfg.get("epochs", 3))
    if behaviour == "ok":
        for epoch in range(1, epochs + 1):
            report(epoch, {"val_accuracy": accuracy(cfg) - 0.1 * (epochs - epoch), "train_loss": 1.0 / epoch})
    elif behaviour == "experts":
        for epoch in range(1, epochs + 1):
            acc = accuracy(cfg) - 0.1 * (epochs - epoch)
            print("@moesweep " + json.dumps({"step": epoch, "metrics": {"val_accuracy": acc, "train_loss": 1.0 / epoch,
                                                                        "val_loss": 1.2 / epoch + 0.05},
                                             "expert_stats": expert_stats(cfg, epoch), "final": False}), flush=True)
            time.sleep(float(cfg.get("epoch_sleep", 0)))
    elif behaviour == "crash":
        report(1, {"val_accuracy": 0.1})
        print("Traceback (most recent call last):\n  File \"train.py\", line 1\nZeroDivisionError: division by zero",
              file=sys.stderr, flush=True)
        sys.exit(3)
    elif behaviour == "hang":
        report(1, {"val_accuracy": 0.1})
        time.sleep(100000)
    elif behaviour == "slow":
        child = subprocess.Popen(["sleep", "100000"])
        with open(os.path.join(os.environ["MOESWEEP_OUTPUT_DIR"], "pids"), "w") as f:
            f.write(f"{os.getpid()} {child.pid}\n")
        for epoch in range(1, 100000):
            report(epoch, {"val_accuracy": 0.5})
            time.sleep(0.1)
    elif behaviour == "gpus":
        start = time.time()
        time.sleep(float(cfg.get("sleep", 1.0)))
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        report(1, {"val_accuracy": accuracy(cfg), "gpu": float(devices) if devices.isdigit() else -1,
                   "gpu_count": len(devices.split(",")) if devices not in ("", "unset") else 0,
                   "start": start, "end": time.time()})
    elif behaviour == "noisy":
        print("@moesweep {not json", flush=True)
        print("@moesweep " + "x" * 2_000_000, flush=True)
        print('@moesweep {"metrics": {"val_accuracy": "high"}}', flush=True)
        print('@moesweep {"metrics": {"train_loss": NaN, "huge": 1e308}}', flush=True)
        report(2, {"val_accuracy": accuracy(cfg)})
    elif behaviour == "nan":
        report(1, {"val_accuracy": float("nan")})
    else:
        print(f"unknown behaviour {behaviour!r}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
