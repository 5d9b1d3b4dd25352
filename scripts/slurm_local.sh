#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for `data.executor: slurm` (phase 01) and tests/test_slurm.py.
#
#   sudo scripts/slurm_local.sh up      # install (Debian/Ubuntu: slurmctld slurmd slurm-client munge), configure, start
#   sudo scripts/slurm_local.sh status  # sinfo + the daemons' PIDs
#   sudo scripts/slurm_local.sh down    # stop slurmd, slurmctld, munged (the config stays; `up` again is idempotent)
#   (make slurm-up / make slurm-down)
#
# One node named after `hostname -s` with the CPUs and memory `slurmd -C` measures, one partition
# ($SLURM_PARTITION, default "cpu": the smoke profile's data.slurm.partition), no cgroups
# (proctrack/linuxproc, task/none: works in containers), no accounting database; job completions are written to
# /var/log/slurm/jobcomp.log (jobcomp/filetxt), which `sacct -c` reads. Daemons are started directly (no systemd).
# An /etc/slurm/slurm.conf that this script did not write is never touched: on a real cluster there is nothing
# to do here.
set -euo pipefail

PARTITION="${SLURM_PARTITION:-cpu}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARK="# written by arabic_r1 scripts/slurm_local.sh"
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
CTLD_PID="$RUN_DIR/slurmctld.pid"
SLURMD_PID="$RUN_DIR/slurmd.pid"
MUNGE_PID=/run/munge/munged.pid
WAIT_S="${SLURM_WAIT_S:-60}"

die() { echo "slurm_local: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "run as root (sudo $0 $*)"; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() {  # stop_pid NAME PIDFILE: SIGTERM, wait up to 10 s, then SIGKILL
    local name=$1 pidfile=$2 pid
    alive "$pidfile" || { rm -f "$pidfile"; return 0; }
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    echo "stopped $name (PID $pid)"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || die "no apt-get: install slurmctld, slurmd, slurm-client and munge yourself"
    echo "installing slurmctld slurmd slurm-client munge (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null; }
}

write_config() {
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: leaving this machine's Slurm alone"
    fi
    local host cpus mem sockets cores threads
    host=$(hostname -s)
    # slurmd -C: NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
    local probe; probe=$(slurmd -C | head -1)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$probe")
    sockets=$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$probe")
    cores=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$probe")
    threads=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$probe")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$probe")
    mem=$((mem * 95 / 100))  # a little under what slurmd measures, or the node is drained for "Low RealMemory"
    mkdir -p "$CONF_DIR"
    cat >"$CONF.tmp" <<EOF
$MARK (single node, no cgroups); edit the script, not this file
ClusterName=arabic-r1-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
    # No cgroup.conf: Slurm 22.05 (Debian 12) has no CgroupPlugin=disabled (23.02+) and its slurmd only probes
    # cgroups for information here; jobs are tracked by proctrack/linuxproc, not contained.
    mkdir -p /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" "$RUN_DIR"
}

start_munge() {
    alive "$MUNGE_PID" && return 0
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key --force
        else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID"
    for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.2; done
    die "munged did not come up (see /var/log/munge/munged.log)"
}

up() {
    need_root up
    install_packages
    write_config
    start_munge
    if ! alive "$CTLD_PID"; then slurmctld || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"; fi
    for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
    if ! alive "$SLURMD_PID"; then slurmd || die "slurmd did not start (see $LOG_DIR/slurmd.log)"; fi
    local host state=""; host=$(hostname -s)
    for _ in $(seq $((WAIT_S * 2))); do
        state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1)
        case "$state" in
            idle|mixed|allocated) break ;;
            drain*|down*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    case "$state" in
        idle|mixed|allocated) ;;
        *) die "node $host is '${state:-not registered}' after ${WAIT_S}s (see $LOG_DIR/slurmctld.log, slurmd.log)" ;;
    esac
    sinfo
    echo "slurm is up: partition $PARTITION on $host ($(grep -o 'CPUs=[0-9]*' "$CONF"), stop with: $0 down)"
}

down() {
    need_root down
    stop_pid slurmd "$SLURMD_PID"
    stop_pid slurmctld "$CTLD_PID"
    stop_pid munged "$MUNGE_PID"
}

status() {
    for p in "munged:$MUNGE_PID" "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
        if alive "${p#*:}"; then echo "${p%%:*}: running (PID $(cat "${p#*:}"))"; else echo "${p%%:*}: stopped"; fi
    done
    alive "$CTLD_PID" && sinfo
    return 0
}

case "${1:-}" in
    up|start) up ;;
    down|stop) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
