#!/usr/bin/python3
"""The peer for the coordinator benchmark: the same no-op workload on Optuna with its SQLite storage.

Same grid as the load generator (expert_hidden_dim x temperature x seed, GridSampler), an
objective that calls trial.report() N times (the ReportProgress of a moesweep worker) and
returns a value (CompleteTrial). P processes share one SQLite file through optuna's RDBStorage,
the way Optuna documents running a study from several processes.

Optuna on SQLite is slow (tens of trials/s), so it runs a fixed, smaller number of trials (and a
time budget) rather than the whole grid; the figures to compare are rates.

    /usr/bin/python3 bench/optuna_peer.py --procs 4 --trials 300 --json out.json

Needs Debian's python3-optuna (apt-get install -y python3-optuna); run it with /usr/bin/python3.
"""
import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time


def grid(args):
    return {
        "expert_hidden_dim": [64 + 8 * i for i in range(args.axis_a)],
        "temperature": [round(0.1 + 0.05 * i, 10) for i in range(args.axis_b)],
        "seed": [i + 1 for i in range(args.seeds)],
    }


def percentile(values, q):
    if not values:
        return 0.0
    values = sorted(values)
    i = int(q * (len(values) - 1) + 0.5)
    return values[min(i, len(values) - 1)]


def use_wal():
    """Every SQLite connection SQLAlchemy opens gets the coordinator's settings: WAL, synchronous=NORMAL."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def worker(index, args, url, study_name, n_trials, ready, go, results):
    import optuna

    if args.sqlite_wal:
        use_wal()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = grid(args)
    storage = optuna.storages.RDBStorage(url=url, engine_kwargs={"connect_args": {"timeout": 120}})
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=optuna.samplers.GridSampler(space, seed=index))
    report_s, trial_s = [], []

    def objective(trial):
        t0 = time.perf_counter()
        h = trial.suggest_int("expert_hidden_dim", space["expert_hidden_dim"][0], space["expert_hidden_dim"][-1])
        t = trial.suggest_float("temperature", space["temperature"][0], space["temperature"][-1])
        seed = trial.suggest_int("seed", space["seed"][0], space["seed"][-1])
        for step in range(1, args.reports + 1):
            r0 = time.perf_counter()
            trial.report(0.1 + 0.8 * step / args.reports, step)
            report_s.append(time.perf_counter() - r0)
        trial_s.append(time.perf_counter() - t0)
        return 0.5 + (h % 97) / 1000.0 - (t - 1.0) ** 2 + 0.001 * seed

    ready.put(index)
    go.wait()
    start = time.time()
    study.optimize(objective, n_trials=n_trials, timeout=args.budget)
    end = time.time()
    results.put({"index": index, "start": start, "end": end, "trials": len(trial_s),
                 "report_s": report_s, "trial_s": trial_s})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, default=1, help="worker processes sharing the study (default 1)")
    p.add_argument("--trials", type=int, default=300, help="trials in all, split over the processes (default 300)")
    p.add_argument("--budget", type=float, default=90, help="time budget per process in seconds (default 90)")
    p.add_argument("--grid", default="50x50", help="AxB as for the load generator (default 50x50)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--reports", type=int, default=10, help="trial.report calls per trial (default 10)")
    p.add_argument("--sqlite-wal", action="store_true",
                   help="give Optuna's SQLite the coordinator's settings (WAL, synchronous=NORMAL) instead of its "
                        "defaults (rollback journal, synchronous=FULL)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    args.axis_a, args.axis_b = (int(x) for x in args.grid.split("x"))

    try:
        import optuna
    except ImportError:
        sys.exit("optuna_peer: optuna is missing; apt-get install -y python3-optuna and run with /usr/bin/python3")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    if args.sqlite_wal:
        use_wal()

    workdir = tempfile.mkdtemp(prefix="moesweep-optuna-")
    try:
        url = f"sqlite:///{os.path.join(workdir, 'optuna.db')}"
        study_name = "bench-noop"
        optuna.create_study(study_name=study_name, storage=url, direction="maximize")

        ctx = mp.get_context("spawn")
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        per = [args.trials // args.procs + (1 if i < args.trials % args.procs else 0) for i in range(args.procs)]
        procs = [ctx.Process(target=worker, args=(i, args, url, study_name, per[i], ready, go, results))
                 for i in range(args.procs)]
        for pr in procs:
            pr.start()
        for _ in procs:  # Imports and storage set-up are outside the measured window.
            ready.get(timeout=120)
        go.set()
        got = [results.get(timeout=args.budget + 120) for _ in procs]
        for pr in procs:
            pr.join(timeout=30)

        start = min(r["start"] for r in got)
        end = max(r["end"] for r in got)
        window = end - start
        report_s = [x for r in got for x in r["report_s"]]
        trial_s = [x for r in got for x in r["trial_s"]]

        # Check what the storage holds: every trial COMPLETE with all its intermediate values.
        study = optuna.load_study(study_name=study_name, storage=url)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        full = [t for t in complete if len(t.intermediate_values) == args.reports]
        points = {(t.params["expert_hidden_dim"], t.params["temperature"], t.params["seed"]) for t in complete}
        n = len(complete)
        out = {
            "peer": f"optuna {optuna.__version__} RDBStorage(sqlite{', WAL' if args.sqlite_wal else ''}), GridSampler",
            "sqlite": "WAL, synchronous=NORMAL" if args.sqlite_wal else "defaults (rollback journal, synchronous=FULL)",
            "procs": args.procs,
            "trials": n,
            "reports_per_trial": args.reports,
            "window_s": window,
            "trials_per_s": n / window if window > 0 else 0.0,
            "reports_per_s": n * args.reports / window if window > 0 else 0.0,
            "report_p50_ms": 1e3 * percentile(report_s, 0.50),
            "report_p99_ms": 1e3 * percentile(report_s, 0.99),
            "trial_p50_ms": 1e3 * percentile(trial_s, 0.50),
            "trial_p99_ms": 1e3 * percentile(trial_s, 0.99),
            "duplicate_points": n - len(points),
            "checks_ok": n == sum(r["trials"] for r in got) and len(full) == n,
        }
        print(f"optuna ({args.procs} process{'es' if args.procs > 1 else ''}, sqlite {out['sqlite']}): {n} trials in {window:.2f} s = "
              f"{out['trials_per_s']:.1f} trials/s, {out['reports_per_s']:.1f} reports/s; trial.report p50 "
              f"{out['report_p50_ms']:.2f} ms p99 {out['report_p99_ms']:.2f} ms; {out['duplicate_points']} duplicate "
              f"grid points; storage check {'OK' if out['checks_ok'] else 'FAILED'}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=2)
        return 0 if out["checks_ok"] else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
