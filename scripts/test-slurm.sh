#!/usr/bin/env bash
# Checks `datamix study emit slurm` on a real SLURM: a one-node cluster on this machine.
#
#   sudo scripts/test-slurm.sh
#
# As root: installs Debian's slurm-wlm and munge when missing (apt-get), starts munged
# (as user munge) unless one runs, writes a one-node slurm.conf into a scratch directory
# (this host's name, CPUs and memory from `slurmd -C`; proctrack/linuxproc, task/none,
# select/cons_tres: no cgroups, no systemd), starts slurmctld and slurmd with it, runs a
# tiny study once locally and once through the emitted scripts (`submit.sh`: seed job,
# job array with afterok on the seed, finish with afterok on the array), waits, and
# compares the two results/outcome.json. Shuts down what it started (the SLURM daemons
# via `scontrol shutdown`, munged by its pid) and leaves /etc alone except for a munge
# key created when none exists. Tested on Debian 12 (SLURM 22.05). Exit 0 = identical.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/datamix-target}"
timeout_s="${SLURM_TEST_TIMEOUT:-900}"

if [ "$(id -u)" != 0 ]; then
  echo "test-slurm.sh: run as root (it installs packages and starts daemons)" >&2
  exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  echo "== installing slurm-wlm and munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

state="$(mktemp -d /tmp/datamix-slurm.XXXXXX)"
chmod 755 "$state"
started_munge=""
conf="$state/slurm.conf"
export SLURM_CONF="$conf"
cleanup() {
  set +e
  if [ -f "$state/slurmctld.pid" ]; then
    scontrol shutdown >/dev/null 2>&1
    for _ in $(seq 1 20); do
      [ -e "/proc/$(cat "$state/slurmctld.pid" 2>/dev/null)" ] || break
      sleep 0.5
    done
  fi
  # slurmd may outlive the controller's shutdown request: stop it by its own pid.
  if [ -f "$state/slurmd.pid" ]; then
    pid="$(cat "$state/slurmd.pid")"
    [ -e "/proc/$pid" ] && kill "$pid"
  fi
  if [ -n "$started_munge" ] && [ -f /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)"
  fi
  echo "== daemons stopped; logs kept in $state"
}
trap cleanup EXIT

echo "== munge"
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  started_munge=1
  for _ in $(seq 1 20); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.5; done
fi
munge -n </dev/null | unmunge >/dev/null

echo "== slurm.conf ($conf)"
host="$(hostname -s)"
node_line="$(slurmd -C | grep '^NodeName=' | sed -E 's/ UpTime=.*//')"
mkdir -p "$state/ctld" "$state/d"
cat >"$conf" <<CONF
ClusterName=datamixtest
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
$node_line State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
cat "$conf" | tail -n 2

echo "== starting slurmctld and slurmd"
slurmctld -f "$conf"
slurmd -f "$conf"
for _ in $(seq 1 60); do
  sinfo -h -o '%T' 2>/dev/null | grep -qE '^idle' && break
  sleep 1
done
sinfo

echo "== building datamix"
cargo build -q -p datamix-cli
datamix="$CARGO_TARGET_DIR/debug/datamix"
work="$state/study"
mkdir -p "$work"
python3 scripts/slurm/tiny-corpus.py "$work"

echo "== local run"
RUST_LOG=warn "$datamix" study --config "$work/local.toml" >"$state/local.out"

echo "== emitting and submitting the SLURM scripts"
"$datamix" --log warn study emit slurm --config "$work/slurm.toml" --out "$work/slurm-jobs" \
  --partition debug --time 00:30:00 --array-throttle 2
ids="$("$work/slurm-jobs/submit.sh")"
echo "$ids"
finish_id="$(echo "$ids" | awk '/^finish /{print $2}')"
array_tasks="$(wc -l <"$work/slurm-jobs/jobs.txt")"

t0=$(date +%s)
while squeue -h | grep -q .; do
  if [ $(($(date +%s) - t0)) -gt "$timeout_s" ]; then
    echo "timed out after ${timeout_s}s"; squeue; exit 1
  fi
  sleep 2
done
echo "== all jobs left the queue after $(($(date +%s) - t0)) s"
state_of() { scontrol show job "$1" 2>/dev/null | grep -oE 'JobState=[A-Z_]+' | head -n1; }
finish_state="$(state_of "$finish_id")"
echo "finish job $finish_id: $finish_state"
failed=0
for f in "$work"/slurm-jobs/logs/*.out; do
  if grep -q '^error:' "$f"; then echo "error in $f:"; cat "$f"; failed=1; fi
done
[ "$finish_state" = "JobState=COMPLETED" ] || { echo "finish did not complete"; cat "$work"/slurm-jobs/logs/finish-*.out || true; exit 1; }
[ "$failed" = 0 ] || exit 1
echo "array: $array_tasks tasks; logs: $(ls "$work"/slurm-jobs/logs | wc -l) files"
records="$(ls "$work/slurm/pool.jobs/trainings" | wc -l)"
distinct="$(ls "$work/slurm/pool.jobs/trainings" | cut -c1-64 | sort -u | wc -l)"
echo "training records: $records for $distinct distinct models"
[ "$records" = "$distinct" ] || { echo "a model was trained twice"; exit 1; }
python3 scripts/slurm/same-outcome.py "$work/local/results/outcome.json" "$work/slurm/results/outcome.json"
echo "== SLURM run matches the local run"
