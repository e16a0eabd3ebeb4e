#!/usr/bin/env bash
# The demo: installs the Debian packages, builds, then runs sweeps/demo.json end to end on this
# machine: a coordinator and two workers on loopback, the sweep submitted and watched live, the
# best configuration of each stage printed, and everything shut down again. The web dashboard
# runs alongside (its URL is printed; port $DASHBOARD_PORT, default 8080, else a free one).
#
#   bash scripts/demo.sh [SPEC.json]      # default sweeps/demo.json (built-in trainer)
#   bash scripts/demo.sh sweeps/pytorch_moe.json   # your-own-program path: a PyTorch command trainer
set -euo pipefail
cd "$(dirname "$0")/.."
spec="${1:-sweeps/demo.json}"

bash scripts/setup.sh

bin=build
work=$(mktemp -d /tmp/moesweep-demo.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
address="127.0.0.1:$port"
export MOESWEEP_COORDINATOR="$address"
pids=()
cleanup() {
  # Workers first (SIGTERM hands running trials back), then the coordinator.
  for pid in "${pids[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:1}"; do wait "$pid" 2>/dev/null || true; done
  [ "${#pids[@]}" -gt 0 ] && kill -TERM "${pids[0]}" 2>/dev/null && wait "${pids[0]}" 2>/dev/null || true
  echo "demo: logs and database kept in $work"
}
trap cleanup EXIT

echo "demo: coordinator on $address, database $work/demo.db"
"$bin/server/moesweep-coordinator" --listen "$address" --db "$work/demo.db" 2>"$work/coordinator.log" &
pids+=($!)
for _ in $(seq 100); do "$bin/client/moesweep" health >/dev/null 2>&1 && break; sleep 0.1; done
"$bin/client/moesweep" health

# One slot per worker and one thread per trial: two workers keep both cores busy.
for name in worker-1 worker-2; do
  "$bin/worker/moesweep-worker" --coordinator "$address" --slots 1 --threads-per-trial 1 --name "$name" \
    --log-dir "$work/trial-logs" --runs-dir "$work/runs" 2>"$work/$name.log" &
  pids+=($!)
done

# The web dashboard: on 8080 unless that is taken.
dash_port=$(python3 -c '
import os, socket
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(os.environ.get("DASHBOARD_PORT", "8080"))))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
"$bin/dashboard/moesweep-dashboard" --coordinator "$address" --listen "127.0.0.1:$dash_port" 2>"$work/dashboard.log" &
pids+=($!)
export MOESWEEP_DASHBOARD="http://127.0.0.1:$dash_port"
echo "demo: dashboard at $MOESWEEP_DASHBOARD/ (open it in a browser)"

"$bin/client/moesweep" validate "$spec"
id=$("$bin/client/moesweep" submit "$spec" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["sweep_id"])')
echo "demo: submitted sweep $id; watching it live (Ctrl-C stops watching, not the sweep)"
echo "demo: or in the browser: $MOESWEEP_DASHBOARD/sweeps/$id"
status=0
"$bin/client/moesweep" watch "$id" || status=$?
echo
"$bin/client/moesweep" best "$id"
"$bin/client/moesweep" export "$id" --format csv --output "$work/trials.csv"
echo "demo: every trial as CSV in $work/trials.csv"
if [ -t 0 ]; then
  read -r -p "demo: the dashboard stays at $MOESWEEP_DASHBOARD/ until you press Enter " _ || true
fi
exit "$status"
