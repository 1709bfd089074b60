"""A whole run killed and resumed, and a finished run replanned after code edits (issue 14).

* Kill and resume: ``snakemake`` is SIGKILLed (its process group and every job it started) while a
  training job is fitting; the next plain run stops with Snakemake's lock message; ``snakemake
  --unlock`` and the same command again finish the run, with final metrics equal bit for bit to
  those of an uninterrupted run of the same config (README: "If a run is interrupted"). The job
  counts as fitting once its per-epoch metrics CSV (logs/train/..., written as it trains) has a row.
* Results follow the code: on that uninterrupted, finished run, a dry run plans nothing, and plans
  exactly the jobs whose code changed once a copy of the source tree (put first on PYTHONPATH; the
  real files are never edited) has a training or dataset file edited; editing a report-only file
  plans nothing. Every job's meta.json records the code hash Snakemake keyed it on.

Both use one uninterrupted run (``finished``), so the module trains its config twice in all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from workdirs import make_workdir, read_without_timing  # tests/workdirs.py

REPO = Path(__file__).resolve().parents[1]
STUDY, VARIANT = "batchnorm", "baseline"
#: enough that the training job is still fitting when it is killed (a few seconds of fit)
EPOCHS = 300
TRAIN_OUT = f"results/runs/{STUDY}/{VARIANT}/chunk0"


def resume_config() -> dict:
    """config/tiny.yaml's batch-norm study, one variant of 2 seeds in one job, trained for EPOCHS."""
    config = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    study = config["studies"][STUDY]
    study["variants"] = {VARIANT: study["variants"][VARIANT]}
    study["training"]["epochs"] = EPOCHS
    # autograd: the job is still fitting when killed (the fused engine trains it at once)
    config.update(seeds=2, seeds_per_job=None, studies={STUDY: study}, engine="torch",
                  datasets={study["dataset"]: config["datasets"][study["dataset"]]}, claims=[])
    return config


def env_with(python_path: Path | None = None, **extra: str) -> dict:
    """This environment with the venv's bin first on PATH, ``python_path`` first on PYTHONPATH."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"], **extra}
    if python_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(python_path), os.environ.get("PYTHONPATH")]))
    return env


def snakemake_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--configfile", "config/tiny.yaml", *args]


def snakemake(workdir: Path, *args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(snakemake_argv(*args), cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def copy_code(dest: Path, source: Path = REPO) -> Path:
    """A copy of ``source``'s package source tree and lock file at ``dest``; returns its src folder."""
    shutil.copytree(source / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(source / "requirements.lock", dest / "requirements.lock")
    return dest / "src"


def code_env(src: Path) -> dict:
    """The environment in which snakemake and its jobs run the package at ``src`` (checked)."""
    env = env_with(src)
    where = subprocess.run([sys.executable, "-c", "import reglab; print(reglab.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(src), where
    return env


@pytest.fixture(scope="module")
def code(tmp_path_factory) -> Path:
    """A snapshot of the package's code, which every run of this module runs (on PYTHONPATH): the same
    code for the runs that are compared, whatever happens to the working tree meanwhile."""
    return copy_code(tmp_path_factory.mktemp("code"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, code) -> Path:
    """resume_config() run once to completion, uninterrupted."""
    work = make_workdir(tmp_path_factory.mktemp("finished"), resume_config())
    snakemake(work, "--cores", "2", env=code_env(code))
    return work


# --------------------------------------------------------------------------- kill and resume
def kill_group(leader: psutil.Process) -> dict[int, list[str]]:
    """SIGKILL the process group of ``leader`` (started in its own session), then any of its
    descendants that left the group; wait until all are gone. Returns the command lines of the
    descendants, by pid, as they were before the kill."""
    descendants = leader.children(recursive=True)
    commands = {}
    for proc in descendants:
        try:
            commands[proc.pid] = proc.cmdline()
        except psutil.Error:
            pass
    os.killpg(leader.pid, signal.SIGKILL)
    for proc in descendants:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    gone, alive = psutil.wait_procs([leader, *descendants], timeout=30)
    assert not alive, f"still alive after SIGKILL: {alive}"
    return commands


def data_rows(path: Path) -> int:
    """Data rows of a CSV being written (0 while it does not exist)."""
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


@pytest.mark.slow
def test_a_killed_snakemake_resumes_after_unlock_to_the_uninterrupted_results(finished, code, tmp_path):
    env = code_env(code)
    work = make_workdir(tmp_path / "killed", resume_config())
    # the training job's per-epoch metrics, appended while it trains: rows there = mid-training
    progress = work / "logs" / "train" / STUDY / VARIANT / "chunk0.metrics.csv"
    proc = subprocess.Popen(snakemake_argv("--cores", "2"), cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    leader = psutil.Process(proc.pid)
    try:
        deadline = time.monotonic() + 120
        while not data_rows(progress):
            assert proc.poll() is None, "snakemake ended before the training job trained an epoch"
            assert time.monotonic() < deadline, "the training job trained no epoch"
            time.sleep(0.02)
    finally:
        killed = kill_group(leader)
        proc.wait(timeout=30)
    assert any(cmd[1:4] == ["-m", "reglab", "train"] for cmd in killed.values()), killed  # it was running
    assert 0 < data_rows(progress) < EPOCHS * 2 and not (work / TRAIN_OUT).exists()  # killed mid-training
    dataset = next((work / "results" / "datasets").glob("*.npz"))  # a job that finished before the kill
    made = dataset.stat().st_mtime_ns

    locked = snakemake(work, "--cores", "2", env=env, check=False)  # the same command: refused
    out = locked.stdout + locked.stderr
    assert locked.returncode != 0 and "LockException" in out and "--unlock" in out, out[-3000:]
    assert not (work / TRAIN_OUT).exists() and not (work / "report").exists()

    snakemake(work, "--unlock", env=env)
    resumed = snakemake(work, "--cores", "2", env=env)  # the same command again: finishes
    assert "rule train:" in resumed.stdout + resumed.stderr
    assert "rule dataset:" not in resumed.stdout + resumed.stderr and dataset.stat().st_mtime_ns == made
    assert (work / "report" / "index.html").is_file()

    runs = sorted(p.relative_to(finished) for p in (finished / "results" / "runs").rglob("final.csv"))
    assert runs == sorted(p.relative_to(work) for p in (work / "results" / "runs").rglob("final.csv"))
    assert len(pd.read_csv(finished / runs[0])) == 2  # both seeds
    for rel in runs:  # the per-seed final metrics, bit for bit (pandas writes floats round-trip)
        assert (work / rel).read_bytes() == (finished / rel).read_bytes(), rel
        history = rel.with_name("history.csv")
        pd.testing.assert_frame_equal(read_without_timing(work / history), read_without_timing(finished / history),
                                      check_exact=True, obj=str(history))
    per_seed = Path("results/aggregate") / STUDY / "per_seed.csv"
    pd.testing.assert_frame_equal(read_without_timing(work / per_seed), read_without_timing(finished / per_seed),
                                  check_exact=True, obj=str(per_seed))


# --------------------------------------------------------------------------- results follow the code
def recorded_params(workdir: Path, rule: str) -> list[list[str]]:
    """The params Snakemake recorded for each output of ``rule`` (.snakemake/metadata/)."""
    records = [json.loads(p.read_text()) for p in (workdir / ".snakemake" / "metadata").rglob("*") if p.is_file()]
    return [record["params"] for record in records if record.get("rule") == rule]


@pytest.mark.slow
def test_each_training_job_records_the_code_hash_snakemake_keyed_it_on(finished):
    metas = list((finished / "results" / "runs").rglob("meta.json"))
    assert len(metas) == 1
    code = json.loads(metas[0].read_text())["code_hash"]
    assert re.fullmatch("[0-9a-f]{16}", code)
    [params] = recorded_params(finished, "train")
    assert repr(code) in params


def planned(workdir: Path, env: dict) -> dict[str, str]:
    """What a dry run would run: rule (and output) -> its reason."""
    proc = snakemake(workdir, "-n", env=env)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block)[1]
        output = re.search(r"^\s*output: (.*)$", block, re.M)
        reason = re.search(r"^\s*reason: (.*)$", block, re.M)
        jobs[f"{rule} {output[1] if output else ''}".strip()] = reason[1] if reason else ""
    return jobs


@pytest.mark.slow
def test_a_finished_run_reruns_exactly_the_jobs_whose_code_changed(finished, code, tmp_path):
    package = copy_code(tmp_path / "code", source=code.parent) / "reglab"  # the finished run's code, to edit
    env = code_env(package.parent)
    work = tmp_path / "work"
    shutil.copytree(finished, work, symlinks=True)

    def edit(name: str) -> None:
        with (package / name).open("a") as fh:
            fh.write("\n# an edit\n")

    assert planned(work, env) == {}  # the same code, in another place: nothing to do
    edit("report.py")
    edit("stats.py")
    assert not [job for job in planned(work, env) if job.startswith(("train", "dataset"))]  # report-only code

    edit("layers.py")
    jobs = planned(work, env)
    assert "Params have changed" in jobs[f"train {TRAIN_OUT}"], jobs
    assert not [job for job in jobs if job.startswith("dataset")]

    edit("data.py")
    jobs = planned(work, env)
    dataset = next(job for job in jobs if job.startswith("dataset"))
    assert "Params have changed" in jobs[dataset], jobs
    assert f"train {TRAIN_OUT}" in jobs
