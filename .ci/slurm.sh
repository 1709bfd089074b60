#!/usr/bin/env bash
# CI: run the workflow on a real single-node SLURM through snakemake-executor-plugin-slurm and
# profiles/slurm, and check it against a local run. Needs root and apt-get (Debian 12); where it
# cannot run it prints a line starting with "SKIP:" and exits 0. About 4 CPU-minutes of work: 2.5-4.5
# minutes on a 2-core machine, by how busy it is (every run has a time limit; at most ~9 minutes).
#
#  1. Installs slurmctld, slurmd, slurmdbd, munge and MariaDB (apt-get) and starts them directly (no
#     systemd): one node, accounting through slurmdbd, cluster "reglabci", partition "ci", account
#     "reglab". Every daemon it starts it stops again on exit, by PID. Their state lives in a
#     temporary directory; /etc/slurm/slurm.conf and slurmdbd.conf (where SLURM's tools look for
#     them) are removed again.
#  2. Runs, at the same time, each in a temporary copy of the repository:
#       slurm      snakemake --workflow-profile profiles/slurm --configfile config/tiny.yaml
#       local      snakemake --cores 2 --configfile config/tiny.yaml
#       grouped    the profile's optional grouping: 2 small training jobs in one SLURM job
#       timeout    a training job that outlives its 1-minute limit
#       account    an account SLURM does not know
#       partition  a partition SLURM does not know
#  3. Checks: with sacct, that each training job of the slurm run was a SLURM job that COMPLETED;
#     that every results/runs/**/final.csv of the slurm run equals the local run's byte for byte,
#     and every results/aggregate/*/per_seed.csv apart from timing columns; that the time limit is
#     reported as TIMEOUT with the job's logs; that an unknown account or partition ends the run
#     with SLURM's message, not a hang.
#
# Environment: REGLAB_PYTHON: the Python with snakemake and the plugin (default: the repository's
# .venv/bin/python, else python3). REGLAB_SLURM_KEEP=1 keeps the temporary directory (logs).
# `.ci/slurm.sh --up` only starts the cluster and keeps it up until interrupted (for debugging).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T0=$SECONDS
MARK="written by reglab .ci/slurm.sh"
CLUSTER=reglabci PARTITION=ci ACCOUNT=reglab

log() { printf '[slurm.sh %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
skip() {
    echo "SKIP: $*"
    exit 0
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Can it run here?
[ "$(id -u)" = 0 ] || skip "needs root to install and start SLURM (run it as root, e.g. in a CI container)"
command -v apt-get >/dev/null 2>&1 || skip "needs apt-get (Debian/Ubuntu) to install SLURM"
for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
    if [ -e "$f" ] && ! grep -q "$MARK" "$f"; then
        skip "$f exists: this machine has a SLURM configuration of its own; not touching it"
    fi
done
PY=${REGLAB_PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python; else PY=$(command -v python3 || true); fi
fi
[ -n "$PY" ] && [ -x "$PY" ] || skip "no Python found (set REGLAB_PYTHON)"
"$PY" -c "import snakemake, snakemake_executor_plugin_slurm" 2>/dev/null \
    || skip "$PY has no snakemake-executor-plugin-slurm (pip install -e '.[slurm]')"
export PATH="$(dirname "$PY"):$PATH" # for `python -m reglab` in the rules, also inside the SLURM jobs

# ---------------------------------------------------------------------------------------------
# Clean-up on any exit: what this script started, by PID.
WORK=$(mktemp -d /tmp/reglab-slurm.XXXXXX)
chmod 755 "$WORK"
DAEMON_NAMES=() DAEMON_PIDS=() RUN_PIDS=() WROTE=()

is_child() { [ "$(ps -o ppid= -p "$1" 2>/dev/null | tr -d ' ')" = "$$" ]; }

stop_pid() { # stop_pid NAME PID: TERM, wait up to 15 s, then KILL (only a child of this script)
    local name=$1 pid=$2 i
    is_child "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 30); do
        is_child "$pid" && kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    echo "[slurm.sh] $name ($pid) ignored TERM for 15 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i ids
    set +e
    trap - EXIT INT TERM
    for pid in "${RUN_PIDS[@]}"; do stop_pid snakemake "$pid"; done
    if [ -n "${SLURMCTLD_UP:-}" ]; then # cancel any job left (this cluster has only this script's)
        ids=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
        if [ -n "${ids// /}" ]; then
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null
            for i in $(seq 40); do
                [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
                sleep 0.5
            done
        fi
    fi
    for ((i = ${#DAEMON_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${DAEMON_NAMES[i]}" "${DAEMON_PIDS[i]}"; done
    for f in "${WROTE[@]}"; do rm -f "$f"; done
    if [ "$rc" != 0 ] || [ -n "${REGLAB_SLURM_KEEP:-}" ]; then
        echo "[slurm.sh] logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    log "done (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_daemon() { # start_daemon NAME COMMAND...: a daemon in the foreground of a background job
    local name=$1
    shift
    "$@" >"$WORK/log/$name.out" 2>&1 &
    DAEMON_NAMES+=("$name")
    DAEMON_PIDS+=("$!")
}

wait_for() { # wait_for SECONDS WHAT COMMAND...: poll COMMAND until it succeeds
    local secs=$1 what=$2 end
    shift 2
    end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$end" ]; then
            tail -n 20 "$WORK"/log/* >&2 2>/dev/null
            fail "$what not ready after ${secs}s"
        fi
        sleep 0.5
    done
}

write_conf() { # write_conf PATH MODE OWNER < content
    cat >"$1"
    chmod "$2" "$1"
    chown "$3" "$1"
    WROTE+=("$1")
}

# ---------------------------------------------------------------------------------------------
log "installing SLURM, munge, MariaDB (apt-get)"
PKGS=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
if ! dpkg -s "${PKGS[@]}" >/dev/null 2>&1; then
    apt-get update -qq >"$WORK/apt.log" 2>&1 || {
        tail "$WORK/apt.log"
        skip "apt-get update failed (no network?)"
    }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PKGS[@]}" \
        >>"$WORK/apt.log" 2>&1 || {
        tail "$WORK/apt.log"
        skip "apt-get install ${PKGS[*]} failed"
    }
fi
for cmd in slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mariadbd mariadb-install-db setpriv; do
    command -v "$cmd" >/dev/null || fail "$cmd not found after installing ${PKGS[*]}"
done
log "slurm $(dpkg-query -W -f='${Version}' slurmctld)"

mkdir -p "$WORK"/{log,state,spool,run,mysql-run}
chown slurm:slurm "$WORK"/{state,run}
chown mysql:mysql "$WORK/mysql-run"
chmod 1777 "$WORK/log" # each daemon writes its own log here
read -r P_DB P_DBD P_CTL P_D < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

# munge, SLURM's authentication (a munged that already answers is used as it is)
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged is running already; using it"
else
    install -d -o munge -g munge -m 0755 /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    start_daemon munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground --force
    wait_for 20 munged sh -c 'munge -n | unmunge'
fi

# MariaDB for slurmdbd: a fresh data directory, 127.0.0.1 only
log "starting mariadb, slurmdbd"
DBPASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
mariadb-install-db --no-defaults --user=mysql --datadir="$WORK/db" --skip-test-db \
    --auth-root-authentication-method=socket --skip-name-resolve >"$WORK/log/mariadb-install.log" 2>&1 || {
    tail "$WORK/log/mariadb-install.log"
    fail "mariadb-install-db failed"
}
SOCK=$WORK/mysql-run/mysqld.sock
start_daemon mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$WORK/db" --socket="$SOCK" \
    --port="$P_DB" --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$WORK/mysql-run/mysqld.pid" \
    --log-error="$WORK/log/mariadbd.log" --innodb-buffer-pool-size=64M
wait_for 60 mariadbd mariadb --no-defaults -S "$SOCK" -u root -e 'SELECT 1'
mariadb --no-defaults -S "$SOCK" -u root -e "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

HOST=$(hostname -s)
NODE=$HOST
mkdir -p /etc/slurm
write_conf /etc/slurm/slurmdbd.conf 0600 slurm:slurm <<EOF
# $MARK (and removed again when it ends)
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$P_DBD
SlurmUser=slurm
LogFile=$WORK/log/slurmdbd.log
PidFile=$WORK/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$P_DB
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF

# The node: 2 CPU slots per core for the main SLURM run (a tiny job is mostly start-up; more of them
# at once hide the time each waits for its status check), plus 2 for the side runs that need
# little CPU (the time-limit job at nice 19, the small grouped run), so that they never wait. Its
# memory: the machine's, at least 16 GB. (SlurmdParameters=config_overrides lets a node claim more
# than it has; SLURM only schedules here: without cgroups nothing is confined.)
read -r REAL_MEM < <(slurmd -C | tr ' ' '\n' | sed -n 's/^RealMemory=//p')
NCPU=$((2 * $(nproc) + 2))
MEM=$((REAL_MEM > 16000 ? REAL_MEM * 9 / 10 : 16000))
write_conf /etc/slurm/slurm.conf 0644 root:root <<EOF
# $MARK (and removed again when it ends)
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$P_CTL
SlurmdPort=$P_D
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
# no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
# a job's processes keep the nice value of the sbatch that submitted it
PropagatePrioProcess=1
KillWait=5
MinJobAge=300
InactiveLimit=0
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$P_DBD
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

start_daemon slurmdbd slurmdbd -D
wait_for 60 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=ci Organization=reglab >/dev/null
sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null

log "starting slurmctld, slurmd (node $NODE: $NCPU CPUs, $MEM MB)"
start_daemon slurmctld slurmctld -D -i
SLURMCTLD_UP=1
wait_for 30 slurmctld scontrol ping
start_daemon slurmd slurmd -D -N "$NODE"
node_idle() { [ "$(sinfo -h -n "$NODE" -o %T 2>/dev/null)" = idle ]; }
wait_for 60 "node $NODE" node_idle
sacctmgr -n -s list user root format=account%30 | grep -qw "$ACCOUNT" || fail "account $ACCOUNT is not set up"
log "SLURM is up: $(sinfo -h -o 'partition %P, %D node %T, CPUs (A/I/O/T) %C')"
if [ "${1:-}" = --up ]; then # for debugging: keep the cluster up until interrupted
    log "state in $WORK; Ctrl-C (or kill -TERM $$) stops it"
    while sleep 5; do :; done
fi

# ---------------------------------------------------------------------------------------------
# The runs, each in its own copy of the repository, in the background.
copy_repo() { # copy_repo DEST: the repository's files (tracked or not ignored): no results, logs
    mkdir -p "$1"
    if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$REPO" ls-files -z -co --exclude-standard |
            (cd "$REPO" && tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$1"
    else
        (cd "$REPO" && tar --exclude=./.git --exclude=./.venv --exclude=./results --exclude=./logs \
            --exclude=./benchmarks --exclude=./.snakemake --exclude='./report/*.html' -cf - .) | tar -xf - -C "$1"
    fi
    # numba's cache of the fused engine's loop (compiled once below; valid for a copy with the
    # source's size and mtime, which tar keeps): six runs do not each compile it at once
    mkdir -p "$1/src/reglab/__pycache__"
    cp -p "$REPO"/src/reglab/__pycache__/fusedkernels.* "$1/src/reglab/__pycache__/" 2>/dev/null || true
}

start_run() { # start_run NAME SECONDS NICE [VAR=VALUE...] -- SNAKEMAKE-ARGS...
    local name=$1 secs=$2 nice=$3 envs=()
    shift 3
    while [ "$1" != -- ]; do
        envs+=("$1")
        shift
    done
    shift
    copy_repo "$WORK/$name"
    (
        cd "$WORK/$name"
        # the copy's source (the package may be installed editable from the live tree)
        export PYTHONPATH="$WORK/$name/src${PYTHONPATH:+:$PYTHONPATH}"
        exec env "${envs[@]}" timeout -k 10 "$secs" nice -n "$nice" "$PY" -m snakemake "$@"
    ) >"$WORK/$name.log" 2>&1 &
    RUN_PIDS+=("$!")
    printf -v "PID_$name" %s "$!"
}

finish_run() { # finish_run NAME: wait for it to end; sets RC_NAME
    local name=$1 pid rc
    pid=PID_$name
    pid=${!pid}
    set +e
    wait "$pid"
    rc=$?
    set -e
    printf -v "RC_$name" %s "$rc"
    RUN_PIDS=("${RUN_PIDS[@]/$pid/}") # ended: never signal that PID again
    log "$name run ended: exit $rc"
}

# the runs below train MLPs only: the dense family's loop
PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m reglab kernels --family dense --out "$WORK/kernels.json" \
    >"$WORK/kernels.log" 2>&1 || log "the fused engine's loop did not compile here: each run compiles it"
export REGLAB_SLURM_ACCOUNT=$ACCOUNT REGLAB_SLURM_PARTITION=$PARTITION
SLURM_ARGS=(--workflow-profile profiles/slurm --slurm-init-seconds-before-status-checks 5)

small_config() { # small_config EPOCHS SEEDS: one study, one small MLP, one job per seed
    cat <<EOF
seeds: $2
seeds_per_job: 1
threads: 1
accelerator: cpu
datasets:
  circles_100: {generator: make_circles, params: {n_samples: 100, noise: 0.1, random_state: 1}, n_train: 30}
studies:
  small:
    title: "One small MLP"
    dataset: circles_100
    training: {optimizer: {name: adam}, epochs: $1, batch_size: 32}
    variants:
      mlp:
        - dense: {units: 64, activation: relu}
        - dense: {units: 1, activation: sigmoid}
claims: []
EOF
}
small_config 6 2 >"$WORK/small.yaml"
small_config 200000 1 >"$WORK/forever.yaml" # many minutes of training
echo "engine: torch" >>"$WORK/forever.yaml"      # with autograd (the fused engine trains it in about a minute)

# Each run has a time limit (timeout), far above what it needs.
log "starting the runs: timeout, slurm, local, grouped, account, partition"
# A training job that outlives its 1-minute limit, not retried. Its sbatch runs at nice 19 (a
# wrapper first in PATH), which SLURM passes on to the job (PropagatePrioProcess=1): it only takes
# CPU time nothing else wants. SLURM checks time limits every 30 s, so the job is killed 60-90 s
# after it starts; the plugin looks at its jobs d, d+23, d+56, d+99 s after the submission (d <= 13:
# the first delay, then 10 s more each time nothing ended), so it sees the TIMEOUT at ~100-112 s.
mkdir -p "$WORK/nice-bin"
printf '#!/bin/sh\nexec nice -n 19 %s "$@"\n' "$(command -v sbatch)" >"$WORK/nice-bin/sbatch"
chmod +x "$WORK/nice-bin/sbatch"
start_run timeout 300 0 PATH="$WORK/nice-bin:$PATH" -- "${SLURM_ARGS[@]}" --configfile "$WORK/forever.yaml" \
    --retries 0 --set-resources train:runtime=1 --slurm-init-seconds-before-status-checks 13 --until train
# the tiny config through the profile on SLURM, and locally. The SLURM run keeps at most 2 jobs per
# core queued or running (--jobs), leaving the node's 2 further slots to the side runs.
start_run slurm 480 0 -- "${SLURM_ARGS[@]}" --jobs "$((NCPU - 2))" --configfile config/tiny.yaml
start_run local 480 0 -- --cores 2 --configfile config/tiny.yaml
# the profile's optional grouping (its commented lines): 2 training jobs in one SLURM job
start_run grouped 300 0 -- "${SLURM_ARGS[@]}" --groups train=train --group-components train=8 --cores 1 \
    --configfile "$WORK/small.yaml" --until train
# an account and a partition SLURM does not know. Their first sbatch waits for the local steps,
# the fused engine's compile among them: six runs compile it at once here, on a busy machine (240 s)
start_run account 240 0 REGLAB_SLURM_ACCOUNT=nosuchaccount -- "${SLURM_ARGS[@]}" \
    --configfile "$WORK/small.yaml" --retries 0 --until train
start_run partition 240 0 REGLAB_SLURM_PARTITION=nosuchpartition -- "${SLURM_ARGS[@]}" \
    --configfile "$WORK/small.yaml" --retries 0 --until train

FAILURES=()
check() { # check DESCRIPTION COMMAND...: log the outcome, remember a failure, go on
    local what=$1
    shift
    if "$@"; then
        log "ok: $what"
    else
        FAILURES+=("$what")
        log "FAILED: $what"
    fi
}
has() { grep -qF -- "$2" "$WORK/$1.log"; }
failed_not_hung() { [ "$1" != 0 ] && [ "$1" != 124 ] && [ "$1" != 137 ]; }
show() {
    echo "----- $1 run: the last ${2:-40} lines of $WORK/$1.log -----"
    tail -n "${2:-40}" "$WORK/$1.log" | cut -c1-400
}

# --- fault paths: an unknown account or partition ends the run with SLURM's message
finish_run account
finish_run partition
check "unknown account: the run fails, does not hang" failed_not_hung "$RC_account"
check "unknown account: the error says so" has account "account nosuchaccount appears to be invalid"
check "unknown partition: the run fails, does not hang" failed_not_hung "$RC_partition"
check "unknown partition: sbatch's message is shown" has partition "Invalid partition name specified"
has account "appears to be invalid" || show account
has partition "Invalid partition name" || show partition

# --- the tiny config on SLURM and locally; the grouped run
for name in slurm local grouped; do
    finish_run $name
    rc=RC_$name
    check "$name run succeeded" test "${!rc}" = 0
    [ "${!rc}" = 0 ] || show $name 80
done

N_TRAIN=$(cd "$WORK/slurm" && PYTHONPATH=src "$PY" -c '
import yaml
from reglab.config import training_jobs, validate_config
print(len(training_jobs(validate_config(yaml.safe_load(open("config/tiny.yaml"))))))' 2>/dev/null || echo "?")

check_sacct() { # check_sacct NAME JOBS STEPS [CPUS TIMELIMIT]: the run's SLURM jobs and job steps
    local name=$1 want_jobs=$2 want_steps=$3 want_cpus=${4:-} want_limit=${5:-} run_id ids n_jobs n_ok n_steps
    run_id=$(sed -n 's/.*SLURM run ID: \([A-Za-z0-9_-]*\).*/\1/p' "$WORK/$name.log" | head -n 1)
    [ -n "$run_id" ] || {
        echo "  no SLURM run ID in $WORK/$name.log"
        return 1
    }
    # the run's jobs: the plugin names them by its run ID
    sacct -X -n -P --name "$run_id" -S now-1hours -o JobIDRaw,State,AllocCPUS,ReqMem,Timelimit,Elapsed,Comment \
        >"$WORK/$name.sacct-jobs" 2>&1 || true
    ids=$(cut -d'|' -f1 "$WORK/$name.sacct-jobs" | paste -sd, -)
    sacct -n -P -j "${ids:-0}" -o JobID,JobName,State,Elapsed,TotalCPU,MaxRSS >"$WORK/$name.sacct-steps" 2>&1 || true
    echo "  the $name run's SLURM jobs (JobID|State|CPUs|ReqMem|Timelimit|Elapsed|Comment):"
    sed 's/^/    /' "$WORK/$name.sacct-jobs"
    echo "  their job steps, one per training job (JobID|JobName|State|Elapsed|TotalCPU|MaxRSS):"
    grep -E '^[0-9]+\.[0-9]+\|' "$WORK/$name.sacct-steps" | sed 's/^/    /'
    n_jobs=$(grep -c . "$WORK/$name.sacct-jobs" || true)
    n_ok=$(cut -d'|' -f2 "$WORK/$name.sacct-jobs" | grep -c '^COMPLETED$' || true)
    # a step <id>.<n> (not <id>.batch or <id>.extern) is one rule job, run by srun in the allocation
    n_steps=$(grep -E '^[0-9]+\.[0-9]+\|' "$WORK/$name.sacct-steps" | cut -d'|' -f3 | grep -c '^COMPLETED$' || true)
    echo "  $n_jobs SLURM jobs, $n_ok COMPLETED (want $want_jobs); $n_steps steps COMPLETED (want $want_steps)"
    [ "$n_jobs" = "$want_jobs" ] && [ "$n_ok" = "$n_jobs" ] && [ "$n_steps" = "$want_steps" ] || return 1
    # only training jobs went to SLURM (the plugin's comment names the rule)
    ! cut -d'|' -f7 "$WORK/$name.sacct-jobs" | grep -qv '^rule_train' || return 1
    [ -z "$want_cpus" ] || ! cut -d'|' -f3 "$WORK/$name.sacct-jobs" | grep -qvx "$want_cpus" || return 1
    [ -z "$want_limit" ] || ! cut -d'|' -f5 "$WORK/$name.sacct-jobs" | grep -qvx "$want_limit" || return 1
}
if [ "$RC_slurm" = 0 ]; then
    check "sacct: each of the $N_TRAIN training jobs ran as a SLURM job and COMPLETED" \
        check_sacct slurm "$N_TRAIN" "$N_TRAIN"
fi
if [ "$RC_grouped" = 0 ]; then
    check "sacct: grouped, 2 training jobs ran one after the other in 1 SLURM job (1 CPU, 6 minutes)" \
        check_sacct grouped 1 2 1 00:06:00
fi

compare_results() { # compare_results A B: run A's results equal run B's
    local a=$WORK/$1 b=$WORK/$2 rel n=0 ok=0
    if ! diff <(cd "$a" && find results/runs -name final.csv | sort) <(cd "$b" && find results/runs -name final.csv | sort); then
        echo "  different sets of final.csv files"
        return 1
    fi
    while read -r rel; do
        n=$((n + 1))
        cmp -s "$a/$rel" "$b/$rel" || {
            echo "  differs: $rel"
            diff "$a/$rel" "$b/$rel" | head -n 6
            ok=1
        }
    done < <(cd "$a" && find results/runs -name final.csv | sort)
    echo "  $n final.csv files compared byte for byte"
    [ "$n" -gt 0 ] || ok=1
    "$PY" - "$a" "$b" <<'EOF' || ok=1
import csv, pathlib, sys
a, b = (pathlib.Path(p) for p in sys.argv[1:3])
TIMING = {"epoch_time_s", "time_to_80_s"}  # as tests/test_workflow.py: these and every *_s column
def rows(path):
    with open(path, newline="") as f:
        table = list(csv.reader(f))
    keep = [i for i, c in enumerate(table[0]) if c not in TIMING and not c.endswith("_s")]
    return [[r[i] for i in keep] for r in table]
files = sorted(p.relative_to(a) for p in a.glob("results/aggregate/*/per_seed.csv"))
bad = [str(f) for f in files if not (b / f).is_file() or rows(a / f) != rows(b / f)]
print(f"  {len(files)} per_seed.csv files compared without timing columns" + (f": {bad} DIFFER" if bad else ""))
sys.exit(1 if bad or not files else 0)
EOF
    return $ok
}
if [ "$RC_local" = 0 ] && [ "$RC_slurm" = 0 ]; then
    check "the SLURM run's results equal the local run's" compare_results slurm local
fi

# --- the time limit: reported as TIMEOUT, with the SLURM log and the training job's log
finish_run timeout
SLURM_LOG=$(grep -o '[^ ]*/slurm_logs/[^ ]*[0-9]\.log' "$WORK/timeout.log" | tail -n 1 || true)
check "time limit: the run fails, does not hang" failed_not_hung "$RC_timeout"
check "time limit: reported as TIMEOUT" has timeout "SLURM status is: 'TIMEOUT'"
check "time limit: the SLURM log is named and kept (${SLURM_LOG:-none})" test -n "$SLURM_LOG" -a -f "${SLURM_LOG:-/}"
logs_reason() { # slurmstepd may write its line a moment after the run has seen the TIMEOUT
    local end=$((SECONDS + 20))
    until grep -q "DUE TO TIME LIMIT" "${SLURM_LOG:-/dev/null}"; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 1
    done
}
check "time limit: the SLURM log says why" logs_reason
check "time limit: the training job's own log is named" grep -qE "log: logs/train/[^ ]+\.log" "$WORK/timeout.log"
has timeout "'TIMEOUT'" || show timeout 60

if [ ${#FAILURES[@]} != 0 ]; then
    printf 'FAILED: %s\n' "${FAILURES[@]}" >&2
    exit 1
fi
log "all checks passed"
