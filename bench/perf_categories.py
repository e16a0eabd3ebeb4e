#!/usr/bin/python3
"""Splits a perf profile of the coordinator (moesweep-coordinator-loadgen --perf FILE) into where
the time goes: per thread kind, and per activity by the frames on each sample's stack.

    /usr/bin/python3 bench/perf_categories.py FILE

Needs `perf` and a profile recorded with call graphs (the loadgen uses --call-graph dwarf).
The first matching rule wins, in the order below.
"""
import collections
import subprocess
import sys

# (activity, any of these substrings in a frame of the stack)
RULES = [
    ("watch stream: writes (one event a message)",
     ("WatchCall", "WatchCallSink")),
    ("replay of stored events (ReplayPage)", ("ReplayPage", "ReadEvents")),
    ("answers: Finish / Write after COMMIT (the coordinator's Done)", ("Held",)),
    ("SQLite: WAL checkpoint (incl. fsync)", ("sqlite3WalCheckpoint", "sqlite3_wal_checkpoint")),
    ("SQLite: COMMIT (WAL frame writes)", ("SweepStore::Commit",)),
    ("SQLite: BEGIN", ("SweepStore::Begin",)),
    ("engine: ReportProgress (INSERT metrics + event)", ("SweepEngine::Report",)),
    ("engine: CompleteTrial", ("SweepEngine::Complete",)),
    ("engine: AcquireTrial", ("SweepEngine::Acquire",)),
    ("requests: polling the completion queue (epoll, read, parse, handlers)", ("Endpoint::Poll",)),
    ("engine: other (batch loop, publish bookkeeping)", ("Coordinator::RunBatch", "Coordinator::Loop")),
    ("gRPC: polling / wake-ups / timers", ("grpc_pollset_work", "epoll_wait", "timer", "gpr_cv_wait",
                                          "futex")),
]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = subprocess.run(["perf", "script", "-i", sys.argv[1], "-F", "comm,tid,ip,sym"], capture_output=True,
                         text=True, errors="replace").stdout
    by_activity = collections.Counter()
    by_thread = collections.Counter()
    total = 0
    for block in out.split("\n\n"):
        lines = [l for l in block.strip().split("\n") if l.strip()]
        if not lines:
            continue
        head = lines[0].split()
        comm = head[0] if head else "?"
        stack = "\n".join(lines[1:])
        total += 1
        thread = comm
        if "Coordinator::Loop" in stack:
            thread = "engine thread (Coordinator::Loop)"
        elif "WalCheckpointer" in stack:
            thread = "WAL checkpointer thread"
        by_thread[thread] += 1
        for name, needles in RULES:
            if any(n in stack for n in needles):
                by_activity[name] += 1
                break
        else:
            by_activity["other"] += 1
    if not total:
        sys.exit("no samples")
    print(f"{total} samples")
    print("by thread:")
    for k, v in by_thread.most_common():
        print(f"  {100 * v / total:5.1f}%  {k}")
    print("by activity:")
    for k, v in by_activity.most_common():
        print(f"  {100 * v / total:5.1f}%  {k}")


if __name__ == "__main__":
    main()
