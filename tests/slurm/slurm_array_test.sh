#!/bin/bash
# deploy/slurm/moesweep-worker.sbatch under a REAL single-node Slurm (Debian's slurm-wlm 22.05 and
# munge): the real coordinator, a 2-task worker array with one (fake) GPU per task, a staged sweep
# of command trials (tests/e2e/testdata/fake_trainer.py, ~2 s each). Checks that
#   - the sweep finishes, each task's worker gets the GPU Slurm gave it (--gres=gpu:1 ->
#     CUDA_VISIBLE_DEVICES -> --gpus) and its trials see only that one;
#   - `scancel` of one task mid-trial hands that trial back (the worker's SIGTERM path: RELEASED,
#     requeued, attempt 2) and it succeeds on the other task;
#   - the other task exits 0 once idle (--exit-when-idle), COMPLETED in Slurm;
#   - a task whose coordinator is gone exits 3 (--give-up-after), FAILED in Slurm.
#
# usage: slurm_array_test.sh COORDINATOR_BIN CLI_BIN WORKER_BIN SOURCE_DIR
# Takes 43-48 s on the development VM (2 shared cores), most of it 14 trials of 2 s; the packages
# (`apt-get install -y --no-install-recommends slurm-wlm munge`, 3.5 MB) installed in 9 s there.
#
# Nothing system-wide is used or disturbed: munged runs with its own key, socket, pid, log and seed
# files, Slurm with its own slurm.conf (SLURM_CONF), state, spool, pid and log files, all in one
# temp folder; every port is a free loopback port picked here; the cluster name is unique. Every
# daemon started here is stopped by PID on exit (jobs first: scancel, then `scontrol listpids`).
# Needs root (slurmd runs jobs as their user, and munge and the cluster run as root here); without
# it, or without the packages (scripts/setup.sh installs slurm-wlm and munge), it exits 77: SKIP.
#
# What this machine (a VM/container without systemd or a usable cgroup hierarchy for Slurm) needs,
# and why:
#   - ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, JobAcctGatherType=none: no cgroups.
#   - NodeName=$(hostname -s) NodeAddr=127.0.0.1 and SlurmctldHost=NAME(127.0.0.1): the host name
#     need not resolve, and nothing listens beyond loopback.
#   - SlurmUser=root, AuthInfo=socket=... pointing at our munged.
#   - munged checks that every folder above its socket is world-executable: the temp folder is 0755.
#   - GPUs: gres.conf needs character devices; two are made with mknod (major 1 minor 3, the same
#     device as /dev/null) in the temp folder as .../dev/nvidia0 and nvidia1. Without cgroups Slurm
#     cannot confine them, but it assigns them and sets CUDA_VISIBLE_DEVICES, which is what the
#     script passes on. The fake trainer never opens them.
#   - No slurmdbd: job end states and exit codes are read from `scontrol show job` (MinJobAge=600
#     keeps finished jobs there).
#   - Plain `scancel` sends SIGTERM to every process of the job, the trainer included, often before
#     the worker; the worker treats a trainer killed by SIGTERM as stopped if its own SIGTERM shows
#     within a second (worker/agent/command_runner.cc).
set -uo pipefail

coordinator_bin=$(realpath "$1") cli_bin=$(realpath "$2") worker_bin=$(realpath "$3") src=$(realpath "$4")
trainer=$src/tests/e2e/testdata/fake_trainer.py
SKIP=77

skip() {
  echo "SKIP: $*"
  exit $SKIP
}
[ "$(id -u)" = 0 ] || skip "needs root to run slurmctld, slurmd and munged"
for tool in munged mungekey slurmctld slurmd sbatch scontrol squeue scancel sinfo; do
  command -v "$tool" >/dev/null || skip "no $tool (apt-get install slurm-wlm munge; scripts/setup.sh does)"
done
[ -x /usr/bin/python3 ] || skip "no /usr/bin/python3 for the fake trainer"

started=$(date +%s)
tmp=$(mktemp -d /tmp/moesweep-slurm.XXXXXX)
chmod 755 "$tmp"  # munged: every folder above its socket must be world-executable.
pids=()           # Daemons started here, in start order.

elapsed() { echo $(($(date +%s) - started)); }
log() { echo "[$(elapsed) s] $*"; }
fail() {
  echo "FAIL: $*"
  for f in "$tmp"/*.log "$tmp"/slurm-*.out; do
    [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }
  done
  exit 1
}

cleanup() {
  local rc=$?
  if [ -n "${SLURM_CONF:-}" ] && [ -f "$SLURM_CONF" ]; then
    scancel --quiet --user=root 2>/dev/null
    for _ in $(seq 1 40); do  # Bounded: at most 20 s for the jobs to end.
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
    # Whatever of the jobs is still running (slurmstepd would orphan it), by PID.
    for pid in $(scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}'); do
      kill -9 "$pid" 2>/dev/null
    done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
  done
  if [ "$rc" = 0 ] || [ "$rc" = "$SKIP" ]; then rm -rf "$tmp"; else echo "kept $tmp"; fi
  log "done (exit $rc)"
}
trap cleanup EXIT

# Waits until the command succeeds, polling every 0.2 s, for at most $1 seconds.
wait_for() {
  local limit=$1
  shift
  local end=$(($(date +%s) + limit))
  while [ "$(date +%s)" -lt "$end" ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

free_ports() {
  /usr/bin/python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])' "$1"
}
read -r coordinator_port ctld_port slurmd_port dead_port < <(free_ports 4)
host=$(hostname -s)

# --- munge, with its own key and socket.
mungekey --create --keyfile="$tmp/munge.key" >/dev/null 2>&1 ||
  dd if=/dev/urandom of="$tmp/munge.key" bs=1024 count=1 status=none
chmod 600 "$tmp/munge.key"
munged --foreground --socket="$tmp/munge.socket" --key-file="$tmp/munge.key" --pid-file="$tmp/munged.pid" \
  --log-file="$tmp/munged.log" --seed-file="$tmp/munged.seed" >"$tmp/munged.out.log" 2>&1 &
pids+=($!)
wait_for 10 test -S "$tmp/munge.socket" || fail "munged did not start"

# --- Slurm: one node with 2 CPUs and 2 fake GPUs.
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/dev"
gres=""
if mknod "$tmp/dev/nvidia0" c 1 3 2>/dev/null && mknod "$tmp/dev/nvidia1" c 1 3 2>/dev/null; then
  gres="Gres=gpu:2"
  echo "NodeName=$host Name=gpu File=$tmp/dev/nvidia[0-1]" >"$tmp/gres.conf"
else
  log "mknod refused: the array runs without GPUs (the GPU checks are left out)"
fi
cat >"$tmp/slurm.conf" <<EOF
ClusterName=msw$$x$RANDOM
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$tmp/munge.socket
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
ReturnToService=2
KillWait=15
MinJobAge=600
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) $gres State=UNKNOWN
PartitionName=moesweep Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$tmp/slurm.conf
slurmctld -D -f "$SLURM_CONF" >"$tmp/slurmctld.out.log" 2>&1 &
pids+=($!)
wait_for 30 scontrol ping || fail "slurmctld did not answer scontrol ping"
slurmd -D -f "$SLURM_CONF" >"$tmp/slurmd.out.log" 2>&1 &
pids+=($!)
node_idle() { sinfo -h -N -o %T | grep -q '^idle$'; }
wait_for 30 node_idle || fail "the node did not become idle: $(sinfo -N 2>&1)"
log "slurm up: cluster $(awk -F= '/^ClusterName/ {print $2}' "$SLURM_CONF"), node $host ${gres:-without GPUs}"

# --- The coordinator and a sweep of 2 + 6 + 6 trials of ~2 s, one GPU each.
"$coordinator_bin" --listen "127.0.0.1:$coordinator_port" --db "$tmp/sweeps.db" >"$tmp/coordinator.log" 2>&1 &
pids+=($!)
cli() { "$cli_bin" "$@" --coordinator "127.0.0.1:$coordinator_port"; }
wait_for 20 cli health --timeout 1 || fail "the coordinator did not become healthy"
trainer_gpus=0
[ -n "$gres" ] && trainer_gpus=1
cat >"$tmp/spec.json" <<EOF
{
  "name": "slurm-array",
  "objective": {"metric": "val_accuracy", "goal": "maximize"},
  "seeds": [1, 2],
  "base": {"behaviour": "gpus", "sleep": 2, "width": 16, "temp": 1.5},
  "baseline": {"width": 4},
  "stages": [
    {"name": "width", "grid": {"width": [16, 64, 256]}},
    {"name": "temp", "grid": {"temp": [0.3, 0.7, 1.5]}}
  ],
  "max_attempts": 1,
  "lease_seconds": 20,
  "trainer": {
    "command": ["/usr/bin/python3", "$trainer", "{trial_name}", "width={width}", "temp={temp}",
                "behaviour={behaviour}", "sleep={sleep}"],
    "env": {"PYTHONUNBUFFERED": "1"},
    "gpus": $trainer_gpus
  }
}
EOF
cli submit "$tmp/spec.json" >/dev/null || fail "submit failed"

# --- The worker array, as a user would submit it (only the size of the node differs).
export MOESWEEP_COORDINATOR=127.0.0.1:$coordinator_port MOESWEEP_WORKER=$worker_bin MOESWEEP_DIR=$tmp/tasks
export MOESWEEP_EXIT_WHEN_IDLE=5 MOESWEEP_GIVE_UP_AFTER=60 MOESWEEP_KILL_GRACE=2
sbatch_args=(--parsable --chdir="$tmp" --output="$tmp/slurm-%A_%a.out" --cpus-per-task=1 --time=10)
[ -n "$gres" ] || sbatch_args+=(--gres=none)
job=$(sbatch "${sbatch_args[@]}" --array=0-1 "$src/deploy/slurm/moesweep-worker.sbatch") || fail "sbatch failed"
log "submitted array job $job"

trials_json() { cli trials 1 --json; }
# One trial, as "ID ATTEMPT WORKER STATE", per line.
trial_lines() {
  trials_json | /usr/bin/python3 -c '
import json, sys
for t in json.load(sys.stdin)["trials"]:
    print(t["trial_id"], t.get("attempt", 0), t.get("worker") or "-", t["state"])'
}

# Once task 1 has finished a trial (so both tasks' GPUs are seen), catch its next trial running and
# cancel the task while that trial runs (it takes 2 s).
victim=""
end=$(($(date +%s) + 60))
while [ -z "$victim" ] && [ "$(date +%s)" -lt "$end" ]; do
  victim=$(trial_lines 2>/dev/null | awk -v w="slurm-${job}_1@" '
    index($3, w) == 1 && $4 == "TRIAL_SUCCEEDED" {done = 1}
    index($3, w) == 1 && $4 == "TRIAL_RUNNING" {running = $1}
    END {if (done && running) print running}')
  [ -n "$(squeue -h -j "${job}_1" -t RUNNING,PENDING 2>/dev/null)" ] || break  # Task 1 ended early.
  sleep 0.2
done
[ -n "$victim" ] || fail "array task 1 did not finish a trial and start another within 60 s: $(squeue 2>&1)"
scancel "${job}_1" || fail "scancel failed"
log "trial $victim was running on task 1: scancel ${job}_1"

# The sweep finishes; the cancelled task's trial was handed back and ran again on task 0.
# Read the whole answer before matching: `grep -q` exits at the first match, and the CLI still
# writing would then die of SIGPIPE, which pipefail makes a failure.
sweep_done() { local out; out=$(cli show 1 --json) && [[ "$out" == *'"SWEEP_SUCCEEDED"'* ]]; }
wait_for 120 sweep_done || fail "the sweep did not finish within 120 s: $(cli show 1 2>&1)"
log "sweep finished"
lines=$(trial_lines) || fail "moesweep trials failed"
echo "$lines"
[ "$(echo "$lines" | wc -l)" = 14 ] || fail "expected 14 trials"
echo "$lines" | awk '$4 != "TRIAL_SUCCEEDED" {bad = 1} END {exit bad}' || fail "not every trial succeeded"
read -r _ attempt worker _ < <(echo "$lines" | awk -v id="$victim" '$1 == id')
[ "$attempt" -ge 2 ] || fail "trial $victim: attempt $attempt, expected a second lease after the release"
[[ "$worker" == "slurm-${job}_0@"* ]] || fail "trial $victim finished on $worker, not on task 0"
out1="$tmp/slurm-${job}_1.out"
grep -q "releasing trial $victim" "$out1" || fail "task 1 did not release trial $victim"
grep -q "exiting with code 0 (stopped by a signal)" "$out1" || fail "task 1 did not exit through its SIGTERM path"

# Each task's trials saw the one GPU Slurm gave that task.
if [ -n "$gres" ]; then
  trials_json | /usr/bin/python3 -c '
import json, sys
gpus = {}
for t in json.load(sys.stdin)["trials"]:
    if t.get("reused_trial_id"):  # Not run: it took an identical trial'"'"'s results.
        continue
    task = t["worker"].split("@")[0]
    assert t["metrics"]["gpu_count"] == 1, t
    gpus.setdefault(task, set()).add(t["metrics"]["gpu"])
print("GPUs seen per task:", {k: sorted(v) for k, v in gpus.items()})
assert all(len(v) == 1 for v in gpus.values()), gpus
assert len(set().union(*gpus.values())) == len(gpus), gpus' || fail "trials did not get their task's GPU"
  grep -q "GPUs [01]," "$tmp/slurm-${job}_0.out" || fail "task 0's worker did not get --gpus"
fi

# Task 0 exits by itself once idle: COMPLETED with exit code 0.
job_field() { scontrol show job "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2; exit}'; }
task_ended() { [ "$(job_field "$1" JobState)" = "$2" ]; }
wait_for 30 task_ended "${job}_0" COMPLETED || fail "task 0 did not exit after going idle: $(scontrol show job "${job}_0")"
[ "$(job_field "${job}_0" ExitCode)" = 0:0 ] || fail "task 0 exit code $(job_field "${job}_0" ExitCode)"
grep -q "exiting with code 0 (idle: no work left)" "$tmp/slurm-${job}_0.out" || fail "task 0 did not log its idle exit"
task_ended "${job}_1" CANCELLED || fail "task 1 is $(job_field "${job}_1" JobState), not CANCELLED"
log "task 0 exited idle (COMPLETED 0:0), task 1 CANCELLED"

# A task whose coordinator is gone gives up: exit code 3, FAILED.
lost=$(MOESWEEP_COORDINATOR=127.0.0.1:$dead_port MOESWEEP_GIVE_UP_AFTER=2 \
  sbatch "${sbatch_args[@]}" --gres=none --output="$tmp/slurm-lost.out" "$src/deploy/slurm/moesweep-worker.sbatch") || fail "sbatch failed"
wait_for 60 task_ended "$lost" FAILED || fail "the task without a coordinator did not fail: $(scontrol show job "$lost")"
[ "$(job_field "$lost" ExitCode)" = 3:0 ] || fail "gave up with exit code $(job_field "$lost" ExitCode), not 3:0"
log "task without a coordinator: FAILED 3:0"
log "PASS"
