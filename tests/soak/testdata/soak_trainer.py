"""The soak test's trainer: a command trainer that reports `epochs` epochs and exits.

Usage: soak_trainer.py CONFIG_FILE   (the trial config as JSON: keys a, b, c, seed, epochs, sleep_ms)

Every value it reports is a multiple of 1/1024, so sums of a few of them are exact in binary and
a stage's means can be recomputed bit for bit in any order (tests/soak/soak.cc, ExpectedScore).
Standard library only; run with python3 -S to start fast.
"""
import json
import sys
import time


def score(cfg):
    # Keep in step with ExpectedScore in tests/soak/soak.cc.
    k = (int(cfg["a"]) * 7 + int(cfg["b"]) * 13 + int(cfg["c"]) * 17 + int(cfg["seed"]) * 5) % 61
    return (300 + k) / 1024.0


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    epochs = int(cfg.get("epochs", 3))
    pause = float(cfg.get("sleep_ms", 0)) / 1000.0
    final = score(cfg)
    for epoch in range(1, epochs + 1):
        if pause > 0:
            time.sleep(pause)
        metrics = {"val_accuracy": final - (epochs - epoch) / 64.0, "train_loss": 1.0 / 1024 * (epochs - epoch + 1)}
        print("@moesweep " + json.dumps({"step": epoch, "metrics": metrics}), flush=True)


if __name__ == "__main__":
    main()
