#!/usr/bin/python3
"""Seed 001's four-stage plan three ways: what reuse and pruning save, and whether they change winners.

Runs sweeps/moe_staged_tuning.json (the plan of ../shared/seeds/001) on the built-in trainer with real
workers, three times on one coordinator:

  exhaustive      "reuse": false, no pruner: every trial runs every epoch (early stopping as in the plan)
  reuse           the plan as written (reuse is on by default)
  reuse+pruning   plus a median pruner on the plan's objective (mAP, which the built-in trainer
                  reports every epoch)

and prints, per way: trials run, trials reused, trials pruned, trial-epochs trained (progress reports
stored, one per epoch trained, retries included), wall time, and each stage's winner. The claim under
test (issue 11): the same winner in every stage with at most 60 % of the exhaustive trial-epochs.

  bench/staged_savings.py [--build build] [--width-divisor 8] [--train-size N] [--val-size N]
                          [--workers 2] [--warmup-steps 2] [--min-trials 4] [--keep DIR]

The pruner's settings default to the issue's example ({"method": "median", "warmup_steps": 2,
"min_trials": 4}). --width-divisor divides the plan's expert widths (512/1024/2048, extended to 4096:
with expert_layers 3 one such trial trains 270M parameters, minutes per trial on one core) so that a
run takes minutes on two cores; --full keeps them; --train-size/--val-size shrink its data.
Wall times are sequential runs on a shared machine: compare them as ratios within one invocation.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(build, address, *args):
    out = subprocess.run([os.path.join(build, "client", "moesweep"), *args, "--coordinator", address],
                         check=True, capture_output=True, text=True)
    return out.stdout


def variants(plan, args):
    exhaustive = json.loads(json.dumps(plan))
    exhaustive["reuse"] = False
    reuse = json.loads(json.dumps(plan))
    pruned = json.loads(json.dumps(plan))
    pruned["pruner"] = {"method": "median", "warmup_steps": args.warmup_steps, "min_trials": args.min_trials}
    if args.pruner_metric:
        pruned["pruner"]["metric"] = args.pruner_metric
    return [("exhaustive", exhaustive), ("reuse", reuse), ("reuse+pruning", pruned)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--spec", default=os.path.join(ROOT, "sweeps", "moe_staged_tuning.json"))
    ap.add_argument("--train-size", type=int, help="instead of the plan's 10000")
    ap.add_argument("--val-size", type=int, help="instead of the plan's 2000")
    ap.add_argument("--width-divisor", type=int, default=8, help="divide the expert widths (and their bounds) by this")
    ap.add_argument("--full", action="store_true", help="keep the plan's data sizes and widths")
    ap.add_argument("--workers", type=int, default=2, help="workers of one slot and one thread each")
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--min-trials", type=int, default=4)
    ap.add_argument("--pruner-metric", help="compare this metric instead of the objective (mAP)")
    ap.add_argument("--only", help="comma-separated ways to run (default: all three)")
    ap.add_argument("--keep", help="keep the database and logs in this folder")
    args = ap.parse_args()

    with open(args.spec) as f:
        plan = json.load(f)
    if args.train_size:
        plan["base"]["train_size"] = args.train_size
    if args.val_size:
        plan["base"]["val_size"] = args.val_size
    if not args.full:
        for stage in plan["stages"]:
            widths = stage.get("grid", {}).get("expert_hidden_dim")
            if widths:
                stage["grid"]["expert_hidden_dim"] = [w // args.width_divisor for w in widths]
            bounds = stage.get("extend_edges", {}).get("bounds", {}).get("expert_hidden_dim")
            if bounds:
                stage["extend_edges"]["bounds"]["expert_hidden_dim"] = [b // args.width_divisor for b in bounds]
    # Stopped by a signal: still stop the coordinator and workers (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = args.keep or tempfile.mkdtemp(prefix="moesweep-savings-")
    os.makedirs(work, exist_ok=True)
    db = os.path.join(work, "bench.db")
    address = f"127.0.0.1:{free_port()}"
    procs = []
    try:
        procs.append(subprocess.Popen([os.path.join(args.build, "server", "moesweep-coordinator"), "--listen", address,
                                       "--db", db], stderr=open(os.path.join(work, "coordinator.log"), "w")))
        for _ in range(100):
            if subprocess.run([os.path.join(args.build, "client", "moesweep"), "health", "--coordinator", address],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        for i in range(args.workers):
            procs.append(subprocess.Popen(
                [os.path.join(args.build, "worker", "moesweep-worker"), "--coordinator", address, "--slots", "1",
                 "--threads-per-trial", "1", "--name", f"bench-{i}"],
                stderr=open(os.path.join(work, f"worker-{i}.log"), "w")))

        wanted = set(args.only.split(",")) if args.only else None
        results = []
        for name, spec in variants(plan, args):
            if wanted and name not in wanted:
                continue
            path = os.path.join(work, f"{name}.json")
            with open(path, "w") as f:
                json.dump(spec, f, indent=1)
            start = time.monotonic()
            sweep_id = json.loads(cli(args.build, address, "submit", path, "--json"))["sweep_id"]
            subprocess.run([os.path.join(args.build, "client", "moesweep"), "watch", str(sweep_id), "--coordinator",
                            address, "--timeout", "86400"], stdout=open(os.path.join(work, f"{name}.watch"), "w"), check=False)
            wall = time.monotonic() - start
            best = json.loads(cli(args.build, address, "best", str(sweep_id), "--json"))
            winners = {s["stage"]: s.get("winner", {}).get("point_json", "-") for s in best["stages"]}
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                epochs = conn.execute("SELECT COUNT(*) FROM trial_metrics m JOIN trials t ON t.id = m.trial_id "
                                      "WHERE t.sweep_id = ?", (sweep_id,)).fetchone()[0]
                states = dict(conn.execute("SELECT state, COUNT(*) FROM trials WHERE sweep_id = ? GROUP BY state",
                                           (sweep_id,)).fetchall())
                reused = conn.execute("SELECT COUNT(*) FROM trials WHERE sweep_id = ? AND reused_from != 0",
                                      (sweep_id,)).fetchone()[0]
            results.append({"way": name, "sweep_id": sweep_id, "wall": wall, "trial_epochs": epochs,
                            "trials": sum(states.values()), "reused": reused, "pruned": states.get(6, 0),
                            "failed": states.get(4, 0), "winners": winners})
            print(f"{name}: sweep {sweep_id} done in {wall:.0f} s, {epochs} trial-epochs", flush=True)
    finally:
        for p in procs[1:]:
            p.terminate()
        for p in procs[1:]:
            p.wait()
        if procs:
            procs[0].terminate()
            procs[0].wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    base = results[0]
    print()
    widths = plan["stages"][0]["grid"].get("expert_hidden_dim")
    print(f"seed 001's plan ({os.path.relpath(args.spec, ROOT)}), train_size {plan['base']['train_size']}, val_size "
          f"{plan['base']['val_size']}, stage-1 widths {widths}, {args.workers} workers x 1 slot x 1 thread")
    print(f"{'way':<15} {'trials':>6} {'reused':>6} {'pruned':>6} {'failed':>6} {'trial-epochs':>12} {'vs first':>8} "
          f"{'wall s':>7} {'vs first':>8}  same winners")
    for r in results:
        same = all(r["winners"].get(k) == v for k, v in base["winners"].items())
        print(f"{r['way']:<15} {r['trials']:>6} {r['reused']:>6} {r['pruned']:>6} {r['failed']:>6} "
              f"{r['trial_epochs']:>12} {r['trial_epochs'] / base['trial_epochs']:>7.0%} {r['wall']:>7.0f} "
              f"{r['wall'] / base['wall']:>7.0%}  {'yes' if same else 'NO'}")
    print()
    for r in results:
        print(f"{r['way']} winners:")
        for stage, point in sorted(r["winners"].items()):
            print(f"  stage {stage}: {point}")
    same_all = all(all(r["winners"].get(k) == v for k, v in base["winners"].items()) for r in results)
    return 0 if same_all else 1


if __name__ == "__main__":
    sys.exit(main())
