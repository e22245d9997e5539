#!/usr/bin/env bash
# A single-node Slurm cluster for the scale-out tests (Debian/Ubuntu, run as root).
#
#   tests/slurm/start_cluster.sh        # install if missing, configure, start, wait until idle
#   source <(tests/slurm/start_cluster.sh --env)   # just print the SLURM_CONF export
#
# Everything of the cluster lives in $GPT2DRIVER_SLURM_DIR (default /tmp/gpt2driver-slurm): its
# slurm.conf, state, spool, logs and pid files. Clients find it through SLURM_CONF=<dir>/slurm.conf,
# so an existing /etc/slurm/slurm.conf is left alone. munged is the system one (key in
# /etc/munge/munge.key, created when missing); it is started only when it is not running, and then
# stopped again by stop_cluster.sh.
#
# Idempotent: when the cluster already answers with a usable node it exits at once. Daemons are
# started in the background as root; their pids are in <dir>/*.pid for stop_cluster.sh.
# Exit status: 0 ready; 1 something failed (the reason is on stderr, with the daemons' log tails).
set -euo pipefail

DIR="${GPT2DRIVER_SLURM_DIR:-/tmp/gpt2driver-slurm}"
CONF="$DIR/slurm.conf"
CTLD_PORT="${GPT2DRIVER_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${GPT2DRIVER_SLURMD_PORT:-6818}"
WAIT_S="${GPT2DRIVER_SLURM_WAIT:-60}"

if [ "${1:-}" = "--env" ]; then
    echo "export SLURM_CONF=$CONF"
    exit 0
fi

say() { echo "start_cluster: $*" >&2; }
die() {
    say "$*"
    for f in "$DIR/slurmctld.log" "$DIR/slurmd.log"; do
        [ -f "$f" ] && { echo "--- tail of $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts munged, slurmctld, slurmd)"
export SLURM_CONF="$CONF"

node_state() { timeout 10 sinfo -h -n localhost -o %t 2>/dev/null | head -n1 | tr -d '*~#$@'; }

# Already up (a previous call)? Then there is nothing to do.
# (sinfo takes seconds to give up when no slurmctld runs: ask only when ours does.)
ctld_pid="$(cat "$DIR/slurmctld.pid" 2>/dev/null || true)"
if [ -n "$ctld_pid" ] && [ "$(cat "/proc/$ctld_pid/comm" 2>/dev/null)" = slurmctld ] \
        && [ -f "$CONF" ] && command -v sinfo >/dev/null; then
    case "$(node_state || true)" in
        idle|mix|alloc|comp) say "already running (SLURM_CONF=$CONF)"; exit 0 ;;
    esac
fi

# ---------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------
need_install=0
for exe in slurmctld slurmd sbatch squeue sinfo scontrol munged munge; do
    command -v "$exe" >/dev/null || need_install=1
done
if [ "$need_install" = 1 ]; then
    command -v apt-get >/dev/null || die "slurm is not installed and apt-get is not available"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' maintainer scripts from starting daemons with their own configuration.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    pkgs=(slurm-wlm munge)
    # (Wait for another apt/dpkg, e.g. unattended-upgrades, instead of failing at once.)
    apt_opts=(-q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=120)
    install() { apt-get install -y --no-install-recommends "${apt_opts[@]}" "${pkgs[@]}"; }
    say "installing ${pkgs[*]}"
    if ! install >"$DIR.apt.log" 2>&1; then
        say "apt-get install failed; running apt-get update first"
        apt-get update "${apt_opts[@]}" >>"$DIR.apt.log" 2>&1 || true
        install >>"$DIR.apt.log" 2>&1 || { [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d;
                                           tail -n 20 "$DIR.apt.log" >&2; die "apt-get install ${pkgs[*]} failed"; }
    fi
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# ---------------------------------------------------------------------------------------------
# munge
# ---------------------------------------------------------------------------------------------
mkdir -p "$DIR/state" "$DIR/spool"
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
    fi
    if id munge >/dev/null 2>&1; then
        chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
        chmod 0700 /etc/munge
        chmod 0400 /etc/munge/munge.key
        chmod 0755 /run/munge
        runuser -u munge -- munged || die "munged did not start"
    else
        chmod 0400 /etc/munge/munge.key
        munged --force || die "munged did not start"
    fi
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || die "munge does not work (munge -n | unmunge)"
    cat /run/munge/munged.pid > "$DIR/munged.pid" 2>/dev/null || pgrep -o -x munged > "$DIR/munged.pid" || true
fi

# ---------------------------------------------------------------------------------------------
# slurm.conf and the daemons
# ---------------------------------------------------------------------------------------------
# A half-started earlier attempt: stop what it left before starting anew.
for d in slurmd slurmctld; do
    if [ -f "$DIR/$d.pid" ]; then
        pid="$(cat "$DIR/$d.pid")"
        if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$d" ]; then
            kill "$pid" || true
            sleep 1
        fi
        rm -f "$DIR/$d.pid"
    fi
done

cpus="$(nproc)"
cat > "$CONF" <<EOF
# Written by tests/slurm/start_cluster.sh: one node (this machine), no accounting.
ClusterName=gpt2driver-test
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SchedulerType=sched/builtin
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

say "starting slurmctld and slurmd (SLURM_CONF=$CONF)"
# -c: start from a clean state (no jobs of an earlier run); -i: ignore state files' errors.
slurmctld -c -i -f "$CONF" || die "slurmctld did not start"
slurmd -N localhost -f "$CONF" || die "slurmd did not start"

state=""
for _ in $(seq $((WAIT_S * 2))); do
    state="$(node_state || true)"
    case "$state" in
        idle) break ;;
        down|drain|drng|fail) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
[ "$state" = idle ] || die "node localhost is not idle after ${WAIT_S}s (state: ${state:-no answer})"
say "ready: node localhost idle, $cpus CPUs, partition debug"
