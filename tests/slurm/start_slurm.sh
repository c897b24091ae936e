#!/usr/bin/env bash
# Start a private single-node Slurm cluster (munged, slurmctld, slurmd) on this
# machine, for the job_prefix=['srun', ...] tests.
#
# Everything lives in one state directory (default ${TMPDIR:-/tmp}/taskproc-slurm,
# or $TASKPROC_SLURM_DIR): a locally generated munge key, slurm.conf, logs,
# spool and pid files. Nothing under /etc is read or written, and the system's
# own munged/slurmd, if any, are left alone. Clients find this cluster through
# SLURM_CONF, so the script prints the path of its slurm.conf as the last line
# on stdout (progress and errors go to stderr).
#
# Idempotent: when the cluster of this state directory already answers with an
# idle node, the script only prints the path. Concurrent calls (pytest-xdist
# workers) are serialised by a lock file. Needs root (slurmd starts job steps
# as the submitting user) and the Debian packages slurm-wlm and munge.
# Stop it with stop_slurm.sh.
set -euo pipefail
# The daemons live in sbin, which a non-login PATH may lack.
PATH=$PATH:/usr/sbin:/sbin

dir=${TASKPROC_SLURM_DIR:-${TMPDIR:-/tmp}/taskproc-slurm}
conf=$dir/slurm.conf
here=$(cd "$(dirname "$0")" && pwd)

fail() {
    echo "start_slurm.sh: $*" >&2
    exit 1
}

for tool in munged mungekey slurmctld slurmd srun sinfo scontrol flock python3; do
    command -v "$tool" >/dev/null 2>&1 ||
        fail "$tool not found (install the Debian packages slurm-wlm and munge)"
done
[ "$(id -u)" = 0 ] || fail "must run as root: slurmd starts job steps as the submitting user"

mkdir -p "$dir"
chmod 0755 "$dir"
# The daemons must not inherit fd 9: they would hold the lock for ever.
exec 9>"$dir.lock"
flock 9

node=$(hostname -s)

node_state() {
    # The node's state as sinfo reports it, empty when the controller does not answer.
    SLURM_CONF=$conf timeout 10 sinfo --noheader --node="$node" --format=%T 2>/dev/null |
        head -n 1 || true
}

alive() {
    # Whether the daemon whose pid file is $1 is running (a dead controller
    # would make sinfo retry for its full message timeout).
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

if [ -f "$conf" ] && alive "$dir/munge/munged.pid" && alive "$dir/slurmctld.pid" &&
    alive "$dir/slurmd.pid"; then
    case $(node_state) in
    idle | mixed | allocated | completing)
        echo "$conf"
        exit 0
        ;;
    esac
fi

# Not running (or broken): stop whatever this state directory started before.
TASKPROC_SLURM_DIR=$dir "$here/stop_slurm.sh" >&2

rm -rf "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
# munged refuses a key that others can read and a socket directory that
# others can write to; clients must be able to reach the socket.
chmod 0755 "$dir/munge"
chmod 0700 "$dir/state" "$dir/spool"

mungekey --create --keyfile="$dir/munge/munge.key" >&2
chmod 0600 "$dir/munge/munge.key"
munged --force \
    --key-file="$dir/munge/munge.key" \
    --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed" 9>&- </dev/null >>"$dir/log/munged.log" 2>&1 ||
    fail "munged did not start; see $dir/log/munged.log"

# Two ports free right now: nothing here may rely on Slurm's default ports
# (6817/6818) being free, e.g. when the machine runs its own Slurm.
read -r ctld_port slurmd_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')

# The node as slurmd sees this machine (CPUs, sockets, cores, memory), so the
# controller never marks it invalid for claiming more than it has.
hardware=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')

cat >"$conf" <<EOF
# Written by start_slurm.sh: a single-node test cluster, no cgroups, no accounting.
ClusterName=taskproc
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# A cancelled step gets SIGTERM, then SIGKILL this many seconds later.
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

slurmctld -c -i -f "$conf" 9>&- </dev/null >>"$dir/log/slurmctld.log" 2>&1 ||
    fail "slurmctld did not start; see $dir/log/slurmctld.log"
slurmd -f "$conf" -N "$node" 9>&- </dev/null >>"$dir/log/slurmd.log" 2>&1 ||
    fail "slurmd did not start; see $dir/log/slurmd.log"

# Wait until the node has registered and is idle (usually a second or two).
state=
for _ in $(seq 1 120); do
    state=$(node_state)
    case $state in
    idle | mixed | allocated) break ;;
    down* | drain* | fail*)
        SLURM_CONF=$conf scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
        ;;
    esac
    sleep 0.5
done
case $state in
idle | mixed | allocated) ;;
*)
    tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    fail "node $node is '${state:-not answering}' after 60 s; logs in $dir/log"
    ;;
esac
echo "$conf"
