#!/usr/bin/env bash
# Stress run (NOT part of CI: it takes long): the default studies with 50 seeds each
# (`--config seeds=50`), in a scratch copy of the workflow. At the end it prints the wall time and,
# for every training job, its peak memory (max_rss of benchmarks/train/**/*.tsv) against the mem_mb
# the train rule declares for that job (read from a dry run before the run starts).
#
#   .ci/stress.sh                         # 50 seeds, all cores, a new directory under $TMPDIR
#   STRESS_SEEDS=20 STRESS_CORES=4 STRESS_DIR=/scratch/stress .ci/stress.sh --keep-going
#
# Extra arguments go to snakemake. STRESS_DIR may be reused: Snakemake then resumes the run (and the
# table shows every job with a benchmark file). Stop it with Ctrl-C (the whole process group).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
seeds="${STRESS_SEEDS:-50}"
cores="${STRESS_CORES:-$(nproc)}"
dir="${STRESS_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/reglab-stress.XXXXXX")}"

if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$repo/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$repo/.venv/bin/activate"
fi

mkdir -p "$dir"
cp "$repo/Snakefile" "$dir/"
cp -r "$repo/workflow" "$repo/config" "$repo/profiles" "$dir/"
cd "$dir"
echo "stress: $seeds seeds per study, $cores cores, in $dir" >&2

# The memory each training job declares (the rule's mem_mb), from a dry run of the same command.
snakemake -n --forceall --config "seeds=$seeds" --cores "$cores" "$@" > stress_plan.txt 2>&1 || {
    tail -20 stress_plan.txt >&2
    echo "stress: the dry run failed (full output in $dir/stress_plan.txt)" >&2
    exit 1
}
python3 - stress_plan.txt > stress_declared.tsv <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
print("job\tmem_mb")
for block in re.split(r"\n(?=\S)", text):
    out = re.search(r"^\s+output: (results/runs/\S+)$", block, re.M)
    mem = re.search(r"^\s+resources: .*\bmem_mb=(\d+)", block, re.M)
    if out and mem:
        print(f"{out.group(1).removeprefix('results/runs/')}\t{mem.group(1)}")
EOF
jobs=$(($(wc -l < stress_declared.tsv) - 1))
echo "stress: $jobs training jobs planned (declared memory in $dir/stress_declared.tsv)" >&2

start=$(date +%s.%N)
status=0
# Interrupted (Ctrl-C, or TERM to the process group): still print the table of the jobs done so far.
trap 'echo "stress: interrupted" >&2' INT TERM
snakemake --config "seeds=$seeds" --cores "$cores" "$@" || status=$?
trap - INT TERM
end=$(date +%s.%N)

python3 - stress_declared.tsv "$start" "$end" "$status" <<'EOF'
import csv, glob, sys
declared_file, start, end, status = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
declared = {row["job"]: int(row["mem_mb"]) for row in csv.DictReader(open(declared_file), delimiter="\t")}
rows = []
for path in sorted(glob.glob("benchmarks/train/**/*.tsv", recursive=True)):
    job = path.removeprefix("benchmarks/train/").removesuffix(".tsv")
    bench = list(csv.DictReader(open(path), delimiter="\t"))
    if not bench:
        continue
    peak = max(float(b["max_rss"]) for b in bench if b["max_rss"] not in ("", "NA"))
    wall = float(bench[-1]["s"])
    rows.append((job, wall, peak, declared.get(job)))
print(f"\nwall time: {end - start:.0f} s (snakemake exit status {status}); "
      f"{len(rows)} of {len(declared)} training jobs have a benchmark file")
print(f"{'job':<44} {'wall s':>8} {'peak MiB':>9} {'mem_mb':>7} {'peak/mem':>8}")
over = 0
for job, wall, peak, mem in rows:
    ratio = f"{peak / mem:.2f}" if mem else "?"
    flag = "  OVER" if mem and peak > mem else ""
    over += bool(flag)
    print(f"{job:<44} {wall:>8.1f} {peak:>9.0f} {mem if mem else '?':>7} {ratio:>8}{flag}")
if rows:
    worst = max(rows, key=lambda r: r[2] / r[3] if r[3] else 0)
    print(f"largest peak: {max(r[2] for r in rows):.0f} MiB; highest peak/mem_mb: {worst[0]} "
          f"({worst[2]:.0f} of {worst[3]} MB); jobs over their mem_mb: {over}")
EOF
exit "$status"
