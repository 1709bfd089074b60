"""`snakemake -n` states the plan's estimated CPU time (workflow/rules/reporting.smk: plan_line)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workdirs import make_workdir  # tests/workdirs.py

REPO = Path(__file__).resolve().parents[1]
PLAN = re.compile(r"^reglab plan: (\d+) training jobs, estimated (\d+) CPU-minutes "
                  r"\(at most (\d+) min for the longest job\)$", re.MULTILINE)


def dry_run(workdir: Path, *targets: str) -> str:
    bindir = str(Path(sys.executable).parent)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", "config/tiny.yaml", "-n", *targets],
        cwd=workdir, env={**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]},
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def job_blocks(out: str) -> list[str]:
    """Snakemake's listing of a dry run, one text block per job (each starts with a timestamp line)."""
    return re.split(r"\n(?=\[[^\]]+\]\n)", out)


def listed_train_jobs(out: str) -> list[tuple[int, int]]:
    """(estimated minutes, threads) of every train job the dry run lists, from Snakemake's own job
    listing. The listed runtime is the job's time limit, twice its estimate and one minute more."""
    jobs = []
    for block in job_blocks(out):
        if re.search(r"^rule train:", block, re.MULTILINE):
            limit = int(re.search(r"resources: .*\bruntime=(\d+)", block).group(1))
            assert limit % 2 == 1 and limit >= 3, block
            threads = re.search(r"^\s+threads: (\d+)$", block, re.MULTILINE)
            jobs.append(((limit - 1) // 2, int(threads.group(1)) if threads else 1))
    return jobs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The tiny config with 2 threads per job and batchnorm's epochs raised (dry runs only), so that
    jobs differ in their runtime estimates."""
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    config["threads"] = 2
    config["studies"]["batchnorm"]["training"]["epochs"] = 60000
    return make_workdir(tmp_path_factory.mktemp("plan"), config)


def check_plan(out: str) -> tuple[int, int, int]:
    jobs = listed_train_jobs(out)
    lines = PLAN.findall(out)
    assert lines, out[-3000:]
    expected = (len(jobs), sum(r * t for r, t in jobs), max(r for r, _ in jobs))
    assert {tuple(map(int, line)) for line in lines} == {expected}
    return expected


def test_dry_run_states_the_cpu_minutes_of_the_training_jobs(workdir):
    n, cpu, longest = check_plan(dry_run(workdir))
    assert n == 14 and longest >= 2 and cpu > 2 * n  # runtimes differ, threads count


def test_the_estimate_covers_only_the_jobs_the_targets_need(workdir):
    everything = check_plan(dry_run(workdir))
    dropout = check_plan(dry_run(workdir, "results/aggregate/dropout/summary.csv"))
    assert 0 < dropout[0] < everything[0] and dropout[1] < everything[1]


def listed_priorities(out: str) -> dict[str, list[tuple[int, int]]]:
    """Rule -> (priority, runtime or 0) of every job the dry run lists (Snakemake prints a job's
    priority when it is not 0)."""
    jobs: dict[str, list[tuple[int, int]]] = {}
    for block in job_blocks(out):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.MULTILINE)
        if not rule:
            continue
        priority = re.search(r"^\s+priority: (\d+)$", block, re.MULTILINE)
        runtime = re.search(r"resources: .*\bruntime=(\d+)", block)
        jobs.setdefault(rule.group(1), []).append(
            (int(priority.group(1)) if priority else 0, int(runtime.group(1)) if runtime else 0))
    return jobs


def test_the_longest_training_jobs_start_first_after_the_quick_steps_they_wait_for(workdir):
    """Snakemake runs ready jobs in priority order: training jobs by their estimated seconds (so the
    longest do not start last and finish after everything else), and before any of them the pack
    specs and datasets they wait for."""
    jobs = listed_priorities(dry_run(workdir, "--forceall"))
    train = jobs["train"]
    assert len(train) == 14 and all(p > 0 for p, _ in train)
    for p1, r1 in train:
        for p2, r2 in train:
            if r1 > r2:
                assert p1 > p2, (p1, r1, p2, r2)
    assert len({r for _, r in train}) > 1  # the estimates differ, so the order is tested
    quick = [p for rule in ("pack_specs", "dataset", "validated_config") for p, _ in jobs[rule]]
    assert quick and min(quick) > max(p for p, _ in train)
