#!/usr/bin/env bash
# CI: run the workflow on a real (single-node) SLURM through snakemake-executor-plugin-slurm and the
# slurm profile, and check it against a local run. Needs root and apt-get (Debian 12); skips (exit 0,
# a line starting with "SKIP:") where it cannot run. About 2-3 minutes.
#
#  1. installs slurmctld, slurmd, slurmdbd, munge, mariadb (apt-get) and starts them directly (no
#     systemd): one node, accounting through slurmdbd, cluster "reglabci", partition "ci", account
#     "reglab". Every daemon it starts it stops again on exit, by PID; its state lives in a temporary
#     directory; /etc/slurm/slurm.conf and slurmdbd.conf (where SLURM's tools look) are removed again.
#  2. in temporary copies of the repository, at the same time:
#       - slurm:    snakemake --workflow-profile profiles/slurm --configfile config/tiny.yaml
#       - local:    snakemake --cores 2 --configfile config/tiny.yaml
#       - timeout:  one training job that outlives its 1-minute limit (reported: TIMEOUT + its log)
#       - account:  an account SLURM does not know  (ends with the error, no hang)
#       - partition: a partition SLURM does not know (ends with sbatch's error, no hang)
#  3. checks with sacct that the training jobs ran as SLURM jobs (one job step per training job) and
#     COMPLETED, and that every results/runs/**/final.csv and results/aggregate/*/per_seed.csv of the
#     SLURM run equals the local run's (final.csv byte for byte; per_seed.csv without timing columns).
#
# Environment: REGLAB_PYTHON (the Python with snakemake and the plugin; default: .venv/bin/python of
# the repository, else python3), REGLAB_SLURM_KEEP=1 keeps the temporary directory (logs).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T0=$SECONDS
MARK="written by reglab .ci/slurm.sh"
CLUSTER=reglabci PARTITION=ci ACCOUNT=reglab

log() { printf '[slurm.sh %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
skip() { echo "SKIP: $*"; exit 0; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Can we run here?
[ "$(id -u)" = 0 ] || skip "needs root to install and start SLURM (run as root, e.g. in a CI container)"
command -v apt-get >/dev/null 2>&1 || skip "needs apt-get (Debian/Ubuntu) to install SLURM"
for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
    if [ -e "$f" ] && ! grep -q "$MARK" "$f"; then
        skip "$f exists: this machine already has a SLURM configuration; not touching it"
    fi
done
PY=${REGLAB_PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python; else PY=$(command -v python3 || true); fi
fi
[ -n "$PY" ] && [ -x "$PY" ] || fail "no Python found (set REGLAB_PYTHON)"
"$PY" -c "import snakemake, snakemake_executor_plugin_slurm" 2>/dev/null \
    || fail "$PY lacks snakemake-executor-plugin-slurm: pip install -e '.[slurm]'"
export PATH="$(dirname "$PY"):$PATH"   # `python -m reglab` in the rules, also inside SLURM jobs

# ---------------------------------------------------------------------------------------------
# Clean-up: whatever this script started, by PID, on any exit.
WORK=$(mktemp -d /tmp/reglab-slurm.XXXXXX)
chmod 755 "$WORK"
DAEMON_NAMES=() DAEMON_PIDS=() RUN_PIDS=() WROTE=()

stop_pid() {  # stop_pid NAME PID: TERM, wait up to 15 s, then KILL
    local name=$1 pid=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    echo "[slurm.sh] $name ($pid) ignored TERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i
    set +e
    trap - EXIT INT TERM
    for pid in "${RUN_PIDS[@]}"; do stop_pid snakemake "$pid"; done
    if [ -n "${SLURMCTLD_UP:-}" ]; then  # cancel what is left (only this script's jobs exist here)
        local ids
        ids=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
        if [ -n "${ids// /}" ]; then
            # shellcheck disable=SC2086
            scancel $ids 2>/dev/null
            for i in $(seq 40); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.5; done
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

start_daemon() {  # start_daemon NAME COMMAND...: runs in the foreground of a background job
    local name=$1
    shift
    "$@" >"$WORK/log/$name.out" 2>&1 &
    DAEMON_NAMES+=("$name")
    DAEMON_PIDS+=("$!")
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll COMMAND until it succeeds
    local secs=$1 what=$2 end
    shift 2
    end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || { tail -n 20 "$WORK"/log/* >&2 2>/dev/null; fail "$what not ready after ${secs}s"; }
        sleep 0.5
    done
}

write_conf() {  # write_conf PATH MODE OWNER < content
    cat >"$1"
    chmod "$2" "$1"
    chown "$3" "$1"
    WROTE+=("$1")
}

# ---------------------------------------------------------------------------------------------
log "installing SLURM, munge, MariaDB (apt-get)"
PKGS=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
if ! dpkg -s "${PKGS[@]}" >/dev/null 2>&1; then
    apt-get update -qq >"$WORK/apt.log" 2>&1 || { tail "$WORK/apt.log"; skip "apt-get update failed (offline?)"; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >>"$WORK/apt.log" 2>&1 \
        || { tail "$WORK/apt.log"; skip "apt-get install ${PKGS[*]} failed"; }
fi
for cmd in slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mariadbd mariadb-install-db setpriv; do
    command -v "$cmd" >/dev/null || fail "$cmd not found after installing ${PKGS[*]}"
done
log "slurm $(dpkg-query -W -f='${Version}' slurmctld)"

mkdir -p "$WORK"/{log,state,spool,run,mysql-run}
chown slurm:slurm "$WORK"/{log,state,run}
chown mysql:mysql "$WORK/mysql-run"
chmod 777 "$WORK/log"  # every daemon writes its own log here
read -r P_DB P_DBD P_CTL P_D < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')

# munge: SLURM's authentication (reuse a munged that already answers)
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running; using it"
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

# MariaDB for slurmdbd, in a fresh data directory, on 127.0.0.1 only
log "starting mariadb, slurmdbd"
DBPASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
mariadb-install-db --no-defaults --user=mysql --datadir="$WORK/db" --skip-test-db \
    --auth-root-authentication-method=socket --skip-name-resolve >"$WORK/log/mariadb-install.log" 2>&1 \
    || { tail "$WORK/log/mariadb-install.log"; fail "mariadb-install-db failed"; }
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
# $MARK (removed again when it ends)
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

# The node: the machine's memory, and more CPUs than it has (SlurmdParameters=config_overrides) so
# that two groups of 4 training jobs, the time-limit job and the rest are scheduled at once: SLURM
# only schedules here (no cgroups), the kernel shares the real cores.
read -r REAL_MEM < <(slurmd -C | tr ' ' '\n' | sed -n 's/^RealMemory=//p')
NCPU=$(($(nproc) > 12 ? $(nproc) : 12))
MEM=$((REAL_MEM > 16000 ? REAL_MEM * 9 / 10 : 16000))
write_conf /etc/slurm/slurm.conf 0644 root:root <<EOF
# $MARK (removed again when it ends)
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
# no cgroups needed
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
# a job's processes keep the nice value of the command that submitted it
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
sacctmgr -n -s list user root format=account%30 | grep -qw "$ACCOUNT" || fail "account $ACCOUNT not set up"
log "SLURM up: $(sinfo -h -o '%P %a %D %T %C')"
if [ "${1:-}" = --up ]; then  # for debugging: keep the cluster up until interrupted
    log "cluster up (state in $WORK); Ctrl-C or kill -TERM $$ stops it"
    while sleep 5; do :; done
fi

# ---------------------------------------------------------------------------------------------
# The runs, each in its own copy of the repository.
copy_repo() {  # copy_repo DEST: the repository's files (tracked and not ignored), no results
    mkdir -p "$1"
    if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$REPO" ls-files -z -co --exclude-standard \
            | (cd "$REPO" && tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$1"
    else
        (cd "$REPO" && tar --exclude=./.git --exclude=./.venv --exclude=./results --exclude=./logs \
            --exclude=./benchmarks --exclude=./.snakemake --exclude='./report/*.html' -cf - .) | tar -xf - -C "$1"
    fi
}

start_run() {  # start_run NAME SECONDS NICE ENV... -- SNAKEMAKE-ARGS...: in the background
    local name=$1 secs=$2 nice=$3 envs=()
    shift 3
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    copy_repo "$WORK/$name"
    (
        cd "$WORK/$name"
        export PYTHONPATH="$WORK/$name/src${PYTHONPATH:+:$PYTHONPATH}"  # the copy's source, not the live tree
        exec env "${envs[@]}" timeout -k 10 "$secs" nice -n "$nice" "$PY" -m snakemake "$@"
    ) >"$WORK/$name.log" 2>&1 &
    RUN_PIDS+=("$!")
    eval "PID_$name=$!"
}

finish_run() {  # finish_run NAME: wait for it; sets RC_NAME
    local name=$1 pid
    eval "pid=\$PID_$name"
    set +e
    wait "$pid"
    eval "RC_$1=$?"
    set -e
}

export REGLAB_SLURM_ACCOUNT=$ACCOUNT REGLAB_SLURM_PARTITION=$PARTITION
SLURM_ARGS=(--workflow-profile profiles/slurm --slurm-init-seconds-before-status-checks 5)
GROUPED=(--groups train=train --group-components train=4 --cores 1)  # the profile's optional grouping

# A training job that outlives its limit: 200,000 epochs (many minutes), 1-minute limit, no retry.
# It runs at the lowest CPU priority (nice 19; SLURM's PropagatePrioProcess keeps it for the job).
"$PY" - "$REPO/config/tiny.yaml" "$WORK/timeout.yaml" <<'EOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
study = cfg["studies"]["dropout"]
study["training"]["epochs"] = 200000
study["seeds"] = 1
study["variants"] = {"overfit": study["variants"]["overfit"]}
cfg.update(seeds_per_job=1, studies={"dropout": study}, claims=[])
yaml.safe_dump(cfg, open(sys.argv[2], "w"), sort_keys=False)
EOF

log "starting runs: slurm, grouped, local, timeout, account, partition"
start_run timeout 240 19 -- "${SLURM_ARGS[@]}" --configfile "$WORK/timeout.yaml" --retries 0 \
    --set-resources train:runtime=1 --slurm-init-seconds-before-status-checks 10 --until train
start_run slurm 300 0 -- "${SLURM_ARGS[@]}" --configfile config/tiny.yaml
start_run grouped 300 0 -- "${SLURM_ARGS[@]}" "${GROUPED[@]}" --configfile config/tiny.yaml
start_run local 300 10 -- --cores 2 --configfile config/tiny.yaml
start_run account 90 5 REGLAB_SLURM_ACCOUNT=nosuchaccount -- "${SLURM_ARGS[@]}" \
    --configfile config/tiny.yaml --retries 0 --until train
start_run partition 90 5 REGLAB_SLURM_PARTITION=nosuchpartition -- "${SLURM_ARGS[@]}" \
    --configfile config/tiny.yaml --retries 0 --until train

FAILURES=()
check() {  # check DESCRIPTION COMMAND...: record a failed check, go on
    local what=$1
    shift
    if "$@"; then log "ok: $what"; else FAILURES+=("$what"); log "FAILED: $what"; fi
}
has() { grep -qF -- "$2" "$WORK/$1.log"; }
failed_not_hung() { [ "$1" != 0 ] && [ "$1" != 124 ] && [ "$1" != 137 ]; }
show() { echo "----- $1 run: last ${2:-40} lines of $WORK/$1.log -----"; tail -n "${2:-40}" "$WORK/$1.log" | cut -c1-400; }

# --- fault paths: an unknown account / partition ends the run with SLURM's message
for name in account partition; do
    finish_run $name
    eval "rc=\$RC_$name"
    log "$name run ended: exit $rc"
done
check "unknown account: the run fails, does not hang" failed_not_hung "$RC_account"
check "unknown account: the error says so" has account "account nosuchaccount appears to be invalid"
check "unknown partition: the run fails, does not hang" failed_not_hung "$RC_partition"
check "unknown partition: sbatch's message is shown" has partition "Invalid partition name specified"
has account "appears to be invalid" || show account
has partition "Invalid partition name" || show partition

# --- the tiny config on SLURM (plain and grouped) and locally
for name in slurm grouped local; do
    finish_run $name
    eval "rc=\$RC_$name"
    log "$name run ended: exit $rc"
    check "$name run succeeded" test "$rc" = 0
    [ "$rc" = 0 ] || show $name 80
done

N_JOBS_EXPECTED=$(cd "$WORK/slurm" && PYTHONPATH=src "$PY" -c '
import sys, yaml
from reglab.config import training_jobs, validate_config
print(len(training_jobs(validate_config(yaml.safe_load(open("config/tiny.yaml"))))))' 2>/dev/null || echo "?")

check_sacct() {  # check_sacct NAME EXPECTED-SUBMISSIONS: the run's SLURM jobs, their steps, their state
    local name=$1 expected=$2 run_id ids n_jobs n_ok n_steps
    run_id=$(sed -n 's/.*SLURM run ID: \([A-Za-z0-9_-]*\).*/\1/p' "$WORK/$name.log" | head -n 1)
    [ -n "$run_id" ] || { echo "no SLURM run ID in $WORK/$name.log"; return 1; }
    # the run's jobs: the plugin names them by its run ID
    sacct -X -n -P --name "$run_id" -S now-1hours \
        -o JobIDRaw,State,AllocCPUS,ReqMem,Timelimit,Elapsed,Comment >"$WORK/$name.sacct-jobs" 2>&1 || true
    ids=$(cut -d'|' -f1 "$WORK/$name.sacct-jobs" | paste -sd, -)
    sacct -n -P -j "${ids:-0}" -o JobID,JobName,State,Elapsed,MaxRSS >"$WORK/$name.sacct-steps" 2>&1 || true
    echo "  $name run's SLURM jobs (JobID|State|CPUs|ReqMem|Timelimit|Elapsed|Comment):"
    sed 's/^/    /' "$WORK/$name.sacct-jobs"
    echo "  and their steps (JobID|JobName|State|Elapsed|MaxRSS):"
    sed 's/^/    /' "$WORK/$name.sacct-steps"
    n_jobs=$(grep -c . "$WORK/$name.sacct-jobs" || true)
    n_ok=$(cut -d'|' -f2 "$WORK/$name.sacct-jobs" | grep -c '^COMPLETED$' || true)
    # a step <id>.<n> (not .batch or .extern) is one rule job, run by srun inside the allocation
    n_steps=$(grep -E '^[0-9]+\.[0-9]+\|' "$WORK/$name.sacct-steps" | cut -d'|' -f3 | grep -c '^COMPLETED$' || true)
    echo "  $name: $n_jobs SLURM jobs ($n_ok COMPLETED, expected $expected), $n_steps completed" \
        "steps (expected $N_JOBS_EXPECTED training jobs)"
    [ "$n_jobs" = "$expected" ] && [ "$n_ok" = "$n_jobs" ] && [ "$n_steps" = "$N_JOBS_EXPECTED" ] \
        && ! cut -d'|' -f7 "$WORK/$name.sacct-jobs" | grep -qv '^rule_train'
}
if [ "$RC_slurm" = 0 ]; then
    check "sacct: every training job was its own SLURM job, all COMPLETED" check_sacct slurm "$N_JOBS_EXPECTED"
fi
if [ "$RC_grouped" = 0 ]; then
    check "sacct: grouped, 4 training jobs a SLURM job, all COMPLETED" \
        check_sacct grouped "$(((N_JOBS_EXPECTED + 3) / 4))"
fi

compare_results() {  # compare_results A B: A's results equal B's
    local a=$WORK/$1 b=$WORK/$2 rel n=0 ok=0
    [ -d "$a/results/runs" ] && [ -d "$b/results/runs" ] || { echo "no results/runs"; return 1; }
    if ! diff <(cd "$a" && find results/runs -name final.csv | sort) <(cd "$b" && find results/runs -name final.csv | sort); then
        echo "different sets of final.csv files"
        return 1
    fi
    while read -r rel; do
        n=$((n + 1))
        cmp -s "$a/$rel" "$b/$rel" || { echo "differs: $rel"; diff "$a/$rel" "$b/$rel" | head -n 6; ok=1; }
    done < <(cd "$a" && find results/runs -name final.csv | sort)
    echo "  $1 vs $2: $n final.csv files compared byte for byte"
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
print(f"  {len(files)} per_seed.csv files compared without timing columns" + (f": DIFFER {bad}" if bad else ""))
sys.exit(1 if bad or not files else 0)
EOF
    return $ok
}
for name in slurm grouped; do
    eval "rc=\$RC_$name"
    if [ "$RC_local" = 0 ] && [ "$rc" = 0 ]; then
        check "$name run's results = local run's" compare_results $name local
    fi
done

# --- the time limit: reported as TIMEOUT, with the job's SLURM log and its own log
finish_run timeout
log "timeout run ended: exit $RC_timeout"
SLURM_LOG=$(grep -o '[^ ]*/slurm_logs/[^ ]*[0-9]\.log' "$WORK/timeout.log" | tail -n 1 || true)
check "time limit: the run fails, does not hang" failed_not_hung "$RC_timeout"
check "time limit: reported as TIMEOUT" has timeout "SLURM status is: 'TIMEOUT'"
check "time limit: the SLURM log is named and kept ($SLURM_LOG)" test -n "$SLURM_LOG" -a -f "${SLURM_LOG:-/nonexistent}"
check "time limit: the SLURM log says so" grep -q "DUE TO TIME LIMIT" "${SLURM_LOG:-/nonexistent}"
check "time limit: the training job's log is named" grep -qE "log: logs/train/[^ ]+\.log" "$WORK/timeout.log"
has timeout "'TIMEOUT'" || show timeout 60

if [ ${#FAILURES[@]} != 0 ]; then
    printf 'FAILED check: %s\n' "${FAILURES[@]}" >&2
    exit 1
fi
log "all checks passed"
