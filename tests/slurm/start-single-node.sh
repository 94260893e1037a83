#!/usr/bin/env bash
# A real single-node Slurm for the tests (and for trying the Slurm profile on one machine):
# installs Debian's slurmctld, slurmd, slurm-client and munge if missing, writes a minimal
# /etc/slurm/slurm.conf (no accounting database; this host is the one node of one
# partition) and starts munged, slurmctld and slurmd. Idempotent: daemons already
# running are left alone. Needs root (or sudo) and Debian/Ubuntu's apt.
#
# Usage: tests/slurm/start-single-node.sh    then: sinfo; squeue
# Stop:  pkill slurmd; pkill slurmctld; pkill munged
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    echo "installing slurmctld slurmd slurm-client munge (Debian packages)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi

# munge authenticates the daemons and clients to each other with a shared key.
if [ ! -s /etc/munge/munge.key ]; then
    as_root mungekey --create --keyfile /etc/munge/munge.key
fi
as_root chown munge:munge /etc/munge/munge.key 2>/dev/null || true
as_root chmod 400 /etc/munge/munge.key
as_root mkdir -p /run/munge /var/log/munge /var/lib/munge
as_root chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if ! pgrep -x munged >/dev/null; then
    as_root runuser -u munge -- munged --force 2>/dev/null || as_root munged --force
fi

# The node line (CPUs, sockets, memory) as slurmd itself detects it, so the node is not
# drained for a mismatch; memory is kept at 90 % to leave room for the daemons.
node="$(hostname -s)"
detected="$(slurmd -C | head -n 1)"
memory="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$detected")"
node_line="$(sed "s/RealMemory=[0-9]*/RealMemory=$((memory * 9 / 10))/" <<<"$detected")"
as_root mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
conf="$(mktemp)"
cat >"$conf" <<CONF
# Written by tests/slurm/start-single-node.sh: one node, one partition, no accounting.
ClusterName=pipeline-test
SlurmctldHost=${node}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# squeue must still see a finished job when the executor asks for its state.
MinJobAge=300
${node_line}
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
CONF
as_root install -m 644 "$conf" /etc/slurm/slurm.conf
rm -f "$conf"

pgrep -x slurmctld >/dev/null || as_root slurmctld
pgrep -x slurmd >/dev/null || as_root slurmd

for _ in $(seq 60); do
    state="$(sinfo --noheader --format=%t 2>/dev/null | head -n 1 || true)"
    case "$state" in
        idle|mix|alloc) echo "slurm is up: node ${node} ${state}"; exit 0 ;;
        drain*|down*) as_root scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "slurm did not come up; see /var/log/slurm/slurmctld.log and /var/log/slurm/slurmd.log" >&2
sinfo >&2 || true
exit 1
