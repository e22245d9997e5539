#!/usr/bin/env bash
# Stop what tests/slurm/start_cluster.sh started: slurmd, slurmctld, and munged when it started it.
# Only the pids recorded in $GPT2DRIVER_SLURM_DIR/*.pid are signalled. Safe to run twice.
# --purge also removes the cluster directory (config, state, logs).
set -uo pipefail

DIR="${GPT2DRIVER_SLURM_DIR:-/tmp/gpt2driver-slurm}"

alive() {  # alive <pid> <name>: that pid runs and is still that daemon (not a reused pid)
    [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

# SIGTERM the recorded daemons together (each takes ~2 s to exit), wait up to 10 s, then SIGKILL.
pids=() names=()
for name in slurmd slurmctld munged; do
    f="$DIR/$name.pid"
    [ -f "$f" ] || continue
    pid="$(cat "$f" 2>/dev/null)"
    rm -f "$f"
    if alive "$pid" "$name"; then
        kill "$pid" 2>/dev/null && pids+=("$pid") && names+=("$name")
    fi
done
for _ in $(seq 100); do
    left=0
    for i in "${!pids[@]}"; do alive "${pids[$i]}" "${names[$i]}" && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.1
done
for i in "${!pids[@]}"; do
    alive "${pids[$i]}" "${names[$i]}" && kill -9 "${pids[$i]}" 2>/dev/null
    echo "stop_cluster: stopped ${names[$i]} (pid ${pids[$i]})" >&2
done
if [ "${1:-}" = "--purge" ]; then
    rm -rf "$DIR" "$DIR.apt.log"
fi
exit 0
