#!/usr/bin/python3
"""Prints the coordinator benchmark table from the JSON files run_coordinator_bench.sh leaves in DIR.

    /usr/bin/python3 bench/report.py DIR

DIR holds loadgen-<n>.json and loadgen-unary-<n>.json (moesweep-coordinator-loadgen --json, with
reports over ReportProgressStream and as unary calls), optuna-<procs>-<mode>.json
(bench/optuna_peer.py --json) and machine.txt.
"""
import glob
import json
import os
import statistics
import sys

TARGETS = {"trials_per_s": 1000, "reports_per_s": 20000, "watch_p99_ms": 50}


def load(path):
    with open(path) as f:
        return json.load(f)


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:,.{digits}f}"


def ratio(a, b):
    return f"{a / b:,.0f}x" if a and b else "-"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    runs = [load(p) for p in sorted(glob.glob(os.path.join(d, "loadgen-[0-9]*.json")))]
    unary_runs = [load(p) for p in sorted(glob.glob(os.path.join(d, "loadgen-unary-*.json")))]
    if not runs:
        sys.exit(f"report: no loadgen-<n>.json in {d}")
    runs.sort(key=lambda r: r["trials_per_s"])
    unary_runs.sort(key=lambda r: r["trials_per_s"])
    med = runs[len(runs) // 2]  # The median run by trials/s (the upper one of two).
    unary = unary_runs[len(unary_runs) // 2] if unary_runs else None
    peers = {}
    for p in glob.glob(os.path.join(d, "optuna-*.json")):
        _, procs, mode = os.path.basename(p)[:-5].split("-")
        peers[(int(procs), mode)] = load(p)

    if os.path.exists(os.path.join(d, "machine.txt")):
        print(open(os.path.join(d, "machine.txt")).read().rstrip())
    print()
    print(f"Workload: one sweep of {med['trials']} no-op trials (one stage, 50x50 grid x 2 seeds by default); each "
          f"worker does AcquireTrial -> {med['reports_per_trial']} x ReportProgress -> CompleteTrial, the reports "
          f"over one ReportProgressStream per worker (as moesweep-worker sends them); the 'unary' column sends each "
          f"as a ReportProgress call.")
    print(f"moesweep: {med['workers']} concurrent workers over loopback gRPC ({med['client_threads']} client threads, "
          f"{med['channels']} channels), one WatchSweep client attached; median of {len(runs)} run(s) by trials/s.")
    print("Optuna: the same grid (GridSampler) and objective (trial.report x N, then return) on RDBStorage(SQLite); "
          "it runs a fixed, smaller number of trials, so compare rates, not totals.")
    print()

    o1, o4 = peers.get((1, "default")), peers.get((4, "default"))
    w1, w4 = peers.get((1, "wal")), peers.get((4, "wal"))
    cols = ["moesweep", "unary", "optuna 1p", "optuna 4p", "ratio 1p", "ratio 4p", "target"]
    rows = []

    def peer_row(name, key, target, digits=1):
        ours = med[key]
        u = unary[key] if unary else None
        a = o1[key] if o1 else None
        b = o4[key] if o4 else None
        met = ""
        if target is not None:
            met = f">= {target:,} {'met' if ours >= target else 'MISSED'}"
            if u is not None:
                met += f" (unary: {'met' if u >= target else 'missed'})"
        rows.append([name, fmt(ours, digits), fmt(u, digits), fmt(a, digits), fmt(b, digits), ratio(ours, a),
                     ratio(ours, b), met])

    def ms(r, key):
        return f"{r[key]['p50_ms']:.2f} / {r[key]['p99_ms']:.2f}" if r else "-"

    peer_row("trials/s", "trials_per_s", TARGETS["trials_per_s"])
    peer_row("metric reports/s", "reports_per_s", TARGETS["reports_per_s"], 0)
    rows.append(["trials measured", fmt(med["trials"], 0), fmt(unary["trials"], 0) if unary else "-",
                 fmt(o1["trials"], 0) if o1 else "-", fmt(o4["trials"], 0) if o4 else "-", "", "", ""])
    rows.append(["report p50 / p99 ms", ms(med, "report"), ms(unary, "report"),
                 f"{o1['report_p50_ms']:.2f} / {o1['report_p99_ms']:.2f}" if o1 else "-",
                 f"{o4['report_p50_ms']:.2f} / {o4['report_p99_ms']:.2f}" if o4 else "-", "", "", ""])
    for name, key in (("AcquireTrial p50 / p99 ms", "acquire"), ("CompleteTrial p50 / p99 ms", "complete")):
        rows.append([name, ms(med, key), ms(unary, key), "-", "-", "", "", ""])
    wp99 = med["watch"]["p99_ms"]
    rows.append(["watch p50 / p99 ms", ms(med, "watch"), ms(unary, "watch"), "-", "-", "", "",
                 f"p99 <= {TARGETS['watch_p99_ms']} {'met' if wp99 <= TARGETS['watch_p99_ms'] else 'MISSED'}"])
    durable = all(r["checks_ok"] for r in runs + unary_runs)
    rows.append(["every ack durable, once", f"{'yes' if durable else 'NO'} (SIG{med['kill']})",
                 "yes" if unary_runs and all(r["checks_ok"] for r in unary_runs) else "-",
                 "yes" if o1 and o1["checks_ok"] else "-", "yes" if o4 and o4["checks_ok"] else "-", "", "",
                 "required " + ("met" if durable else "MISSED")])
    if w1 or w4:
        rows.append(["optuna WAL trials/s", "", "", fmt(w1["trials_per_s"]) if w1 else "-",
                     fmt(w4["trials_per_s"]) if w4 else "-", ratio(med["trials_per_s"], w1["trials_per_s"]) if w1 else "-",
                     ratio(med["trials_per_s"], w4["trials_per_s"]) if w4 else "-", ""])

    widths = [max(len(str(r[i])) for r in rows + [[""] + cols]) for i in range(len(cols) + 1)]
    header = [""] + cols
    print("  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)))
    print()
    if unary_runs:
        print("unary runs (trials/s): " + ", ".join(f"{r['trials_per_s']:.0f}" for r in unary_runs))
    print("runs (trials/s): " + ", ".join(f"{r['trials_per_s']:.0f}" for r in runs) +
          f"; median run: {med['window_s']:.2f} s for {med['trials']} trials, CPU {med['coordinator_cpu_s']:.2f} s "
          f"coordinator + {med['loadgen_cpu_s']:.2f} s load generator over {med['load_wall_s']:.2f} s wall "
          f"({100 * (med['coordinator_cpu_s'] + med['loadgen_cpu_s']) / med['load_wall_s'] / os.cpu_count():.0f}% of "
          f"{os.cpu_count()} cores)")
    by_cpu = sorted(med["coordinator_threads_cpu_s"].items(), key=lambda kv: -kv[1])
    threads = ", ".join(f"{k} {v:.2f} s" for k, v in by_cpu[:3])
    print(f"coordinator CPU by thread: {threads}")
    for p in (o1, o4, w1, w4):
        if p:
            print(f"optuna {p['procs']}p, sqlite {p['sqlite']}: {p['trials']} trials in {p['window_s']:.1f} s, "
                  f"{p['trials_per_s']:.1f} trials/s; trial p50 {p['trial_p50_ms']:.1f} ms")
    if not all(r.get("live_watch", True) for r in runs):
        print("NOTE: some runs had no live watcher (--no-watch): not the benchmark's workload")
    failures = [f for r in runs + unary_runs for f in r["failures"]]
    for f in failures:
        print("CHECK FAILED: " + f)
    return 0 if durable else 1


if __name__ == "__main__":
    sys.exit(main())
