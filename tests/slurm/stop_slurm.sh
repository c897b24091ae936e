#!/usr/bin/env bash
# Stop the daemons start_slurm.sh started from the same state directory
# (their pid files), and nothing else.
set -uo pipefail

dir=${TASKPROC_SLURM_DIR:-${TMPDIR:-/tmp}/taskproc-slurm}

for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
        # Wait for it to exit, so a restart can bind its port and pid file again.
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        echo "stopped $(basename "$pidfile" .pid) ($pid)"
    fi
    rm -f "$pidfile"
done
