#!/usr/bin/env bash
# Limits under load in one command: the coordinator load generator's normal run (32 no-op workers,
# 1,000 trials, one live watcher) alternated with the same run beside hostile clients: STALLED
# WatchSweep streams that never read (each on its own connection) and a stream of requests over
# the limits (a 2 MB spec, a report of 100,000 metrics, a spec of 10M '['), JUNK_RATE a second.
# Prints trials/s and the coordinator's peak RSS (VmHWM) of both kinds and their ratio. Every run
# also makes the load generator's exactly-once checks, plus: every junk request refused, and two
# stalled watchers read to the end afterwards hold every event without a gap.
#
#   bench/limits_under_load.sh                       # 3 rounds, 200 stalled watchers, 30 junk/s
#   ROUNDS=1 STALLED=200 JUNK_RATE=0 bench/limits_under_load.sh   # junk back to back
#
# Extra arguments go to moesweep-coordinator-loadgen in both kinds of run. Environment:
#   BUILD_DIR   build directory (default <repo>/build-bench, as bench/run_coordinator_bench.sh)
#   ROUNDS      pairs of runs (default 3)
#   STALLED     stalled watchers (default 200)
#   JUNK_RATE   oversized requests per second (default 30; 0 = back to back)
#   GRID        the sweep's grid, x 2 seeds (default 25x20: 1,000 trials, 12,000 events, more than
#               a watcher's 10,000-event queue; 200 stalled watchers make each trial cost the
#               coordinator's one thread about 200 x 12 event copies, so 5,000 trials would take
#               minutes)
#   KEEP_RESULTS  directory to keep the JSON and text results in (default: a temp dir, removed)
# Not part of ctest. Each run caps itself at 150 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
ROUNDS=${ROUNDS:-3}
STALLED=${STALLED:-200}
JUNK_RATE=${JUNK_RATE:-30}
GRID=${GRID:-25x20}
PY=/usr/bin/python3

source "$ROOT/bench/lib.sh"
build_loadgen "$ROOT" "$BUILD"

results_dir moesweep-limits
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)," \
  "nproc $(nproc), load average at start $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/machine.txt"

for i in $(seq 1 "$ROUNDS"); do
  for kind in plain hostile; do
    flags=()
    [[ $kind == hostile ]] && flags=(--stalled-watchers "$STALLED" --junk-rate "$JUNK_RATE")
    timeout 180 "$BUILD/bench/moesweep-coordinator-loadgen" --coordinator "$BUILD/server/moesweep-coordinator" \
      --max-seconds 150 --grid "$GRID" --json "$OUT/$kind-$i.json" "${flags[@]}" "$@" >"$OUT/$kind-$i.txt" 2>&1 || {
      echo "load generator run $kind-$i failed:" >&2
      cat "$OUT/$kind-$i.txt" >&2
      exit 1
    }
    grep -E 'trials/s|peak RSS|junk|stalled|checks' "$OUT/$kind-$i.txt" | sed "s/^/  round $i, $kind: /" >&2
  done
done

$PY - "$OUT" "$ROUNDS" <<'PYEOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
runs = {k: [json.load(open(f"{out}/{k}-{i}.json")) for i in range(1, rounds + 1)] for k in ("plain", "hostile")}
def col(kind, key):
    return [r[key] for r in runs[kind]]
def med(xs):
    return statistics.median(xs)
tp = {k: col(k, "trials_per_s") for k in runs}
rss = {k: [r["coordinator_peak_rss_kib"] / 1024 for r in runs[k]] for k in runs}
tp_ratio = [h / p for p, h in zip(tp["plain"], tp["hostile"])]
rss_ratio = [h / p for p, h in zip(rss["plain"], rss["hostile"])]
h = runs["hostile"][0]
print()
print(f"| {rounds} rounds | plain | {h['stalled_watchers']} stalled watchers + junk at {h['junk_rate']:g}/s | ratio (median of rounds) |")
print("|---|---:|---:|---:|")
print(f"| trials/s | **{med(tp['plain']):,.0f}** ({' / '.join(f'{x:,.0f}' for x in tp['plain'])}) | "
      f"**{med(tp['hostile']):,.0f}** ({' / '.join(f'{x:,.0f}' for x in tp['hostile'])}) | **{med(tp_ratio):.2f}x** |")
print(f"| coordinator peak RSS (VmHWM), MiB | **{med(rss['plain']):.0f}** ({' / '.join(f'{x:.0f}' for x in rss['plain'])}) | "
      f"**{med(rss['hostile']):.0f}** ({' / '.join(f'{x:.0f}' for x in rss['hostile'])}) | **{med(rss_ratio):.2f}x** |")
for key, name in (("report", "report p99, ms"), ("complete", "CompleteTrial p99, ms"), ("watch", "live watch p99, ms")):
    p, q = med([r[key]["p99_ms"] for r in runs["plain"]]), med([r[key]["p99_ms"] for r in runs["hostile"]])
    print(f"| {name} | {p:.2f} | {q:.2f} | |")
print(f"| all checks passed | {all(col('plain', 'checks_ok'))} | {all(col('hostile', 'checks_ok'))} | |")
print()
for name in h["junk"]:
    sent = sum(r["junk"][name]["sent"] for r in runs["hostile"])
    inv = sum(r["junk"][name]["invalid_argument"] for r in runs["hostile"])
    exh = sum(r["junk"][name]["resource_exhausted"] for r in runs["hostile"])
    bad = sum(r["junk"][name]["accepted"] + r["junk"][name]["other"] for r in runs["hostile"])
    p99 = med([r["junk"][name]["latency"]["p99_ms"] for r in runs["hostile"]])
    print(f"junk {name}: {sent} sent, {inv} INVALID_ARGUMENT, {exh} RESOURCE_EXHAUSTED, {bad} otherwise; refusal p99 {p99:.1f} ms")
PYEOF
