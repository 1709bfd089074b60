"""Faults and bad input (issue 7): a job killed mid-run, a failing job under --keep-going, damaged
results files, a full disk or read-only folder, and bad arguments to every step the rules call.

Each test provokes the fault for real (SIGKILL, a corrupt dataset file, truncated or mismatched
files, os.replace / mkstemp / write raising ENOSPC or EROFS) and checks that it ends in one clear
message naming the file, never in a traceback or in a partial result taken as complete.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reglab import contract
from reglab.aggregate import ResultsError, aggregate_study
from reglab.cli import main
from reglab.config import study_packs, validate_config, variant_spec
from workdirs import make_workdir, read_without_timing  # tests/workdirs.py

REPO = Path(__file__).resolve().parents[1]
AGGREGATES = ("summary", "per_seed", "curves", "finals", "runtime")


# --------------------------------------------------------------------------- helpers
def tiny_config() -> dict:
    return yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())


def only_study(config: dict, study: str) -> dict:
    """``config`` with one study (and its dataset and claims) only: the same jobs, fewer of them."""
    config = {**config, "studies": {study: config["studies"][study]}}
    dataset = config["studies"][study]["dataset"]
    config["datasets"] = {dataset: config["datasets"][dataset]}
    config["claims"] = [c for c in config.get("claims", []) if c["study"] == study]
    return config




def snakemake_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--configfile", "config/tiny.yaml", *args]


def snakemake_env() -> dict:
    return {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(snakemake_argv(*args), cwd=workdir, env=snakemake_env(), capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc



def train_processes(root: psutil.Process) -> list[psutil.Process]:
    """The ``python -m reglab train`` processes below ``root``."""
    found = []
    for proc in root.children(recursive=True):
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        if cmd[:4] == ["python", "-m", "reglab", "train"] or cmd[1:4] == ["-m", "reglab", "train"]:
            found.append(proc)
    return found


def kill_session(leader: int) -> None:
    """SIGKILL the process ``leader`` (started with start_new_session) first, so that it cannot clean
    up, then every process of its session, including any it started meanwhile."""
    os.kill(leader, signal.SIGKILL)
    for _ in range(50):
        members = []
        for proc in psutil.process_iter():
            try:
                if proc.pid != leader and os.getsid(proc.pid) == leader:
                    members.append(proc)
            except (OSError, psutil.Error):
                continue
        if not members:
            return
        for proc in members:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.1)
    raise AssertionError("processes of the killed run are still alive")


def option(cmdline: list[str], name: str) -> str:
    return cmdline[cmdline.index(name) + 1]


# --------------------------------------------------------------------------- 1. SIGKILL mid-run
@pytest.mark.slow
def test_a_run_killed_mid_training_reruns_to_the_uninterrupted_results(tmp_path):
    """SIGKILL Snakemake and its training jobs once a job has started, leave a half-written result
    where a job was killed, remove the stale lock (``snakemake --unlock``, as Snakemake's message
    says) and run the same command again: Snakemake knows the killed jobs' directories are
    incomplete, retrains them (the default profile sets --rerun-incomplete), and every final.csv and
    per_seed.csv equals those of an uninterrupted run.

    The batch-norm study of config/tiny.yaml only, one job per variant (2 jobs, both killed), to
    keep it short.
    """
    config = only_study(tiny_config(), "batchnorm")
    config["seeds_per_job"] = None
    config["engine"] = "torch"  # autograd: the jobs are still training when killed (fused, they are done at once)
    reference = make_workdir(tmp_path / "uninterrupted", config)
    snakemake(reference, "--cores", "2")

    work = make_workdir(tmp_path / "killed", config)
    proc = subprocess.Popen(snakemake_argv("--cores", "2"), cwd=work, env=snakemake_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        root = psutil.Process(proc.pid)
        deadline = time.monotonic() + 300
        while not (jobs := train_processes(root)):
            assert proc.poll() is None, "snakemake ended before any training job started"
            assert time.monotonic() < deadline, "no training job started"
            time.sleep(0.05)
        killed = {option(p.cmdline(), "--outdir"):
                  [s["variant"] for s in json.loads((work / option(p.cmdline(), "--spec-file")).read_text())]
                  for p in jobs}
        kill_session(proc.pid)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:  # the test failed before the kill: leave nothing running
            kill_session(proc.pid)
            proc.wait(timeout=30)
    assert not all((work / outdir / variants[-1] / "meta.json").exists() for outdir, variants in killed.items())

    # What a job killed later would leave: a complete-looking result file of one of its variants.
    for outdir, variants in killed.items():
        partial = work / outdir / variants[0] / "final.csv"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text("study,variant,seed,train_loss,train_acc,test_loss,test_acc\n"
                           f"batchnorm,{variants[0]},0,9.0,0.0,9.0,0.0\n")
    # Without --rerun-incomplete, Snakemake refuses to go on and names them as incomplete.
    refused = snakemake(work, "-n", "--workflow-profile", "none", check=False)
    assert refused.returncode != 0 and "IncompleteFilesException" in refused.stdout + refused.stderr
    for outdir in killed:
        assert outdir in refused.stdout + refused.stderr

    # The killed Snakemake left its lock: the same command says so and how to remove it.
    locked = snakemake(work, "--cores", "2", check=False)
    assert locked.returncode != 0 and "LockException" in locked.stdout + locked.stderr
    assert "--unlock" in locked.stdout + locked.stderr and not (work / "report").exists()
    snakemake(work, "--unlock")
    snakemake(work, "--cores", "2")  # the same command again
    finals = sorted(p.relative_to(reference) for p in (reference / "results" / "runs").rglob("final.csv"))
    assert len(finals) == 2
    assert sorted(p.relative_to(work) for p in (work / "results" / "runs").rglob("final.csv")) == finals
    for rel in [*finals, Path("results/aggregate/batchnorm/per_seed.csv")]:
        pd.testing.assert_frame_equal(read_without_timing(work / rel), read_without_timing(reference / rel),
                                      check_exact=True, obj=str(rel))
    assert (work / "report" / "index.html").is_file()


# --------------------------------------------------------------------------- 2. --keep-going
@pytest.mark.slow
def test_keep_going_finishes_independent_studies_and_names_the_failed_jobs_logs(tmp_path):
    """The dropout study's dataset file is corrupt (written before the run, so Snakemake takes it as
    made): each of its training jobs fails. With --keep-going the batch-norm study still trains and
    aggregates; the report cannot be made; Snakemake's output names each failed job and its log,
    and the log holds our one-line error naming the dataset file."""
    config = tiny_config()
    config["seeds_per_job"] = None  # one job per pack: the same studies, fewer jobs
    work = make_workdir(tmp_path, config)
    corrupt = Path("results/datasets") / f"{config['studies']['dropout']['dataset']}.npz"
    (work / corrupt).parent.mkdir(parents=True)
    (work / corrupt).write_bytes(b"PK\x03\x04 this is not a complete npz file")
    assert config["studies"]["batchnorm"]["dataset"] != config["studies"]["dropout"]["dataset"]

    proc = snakemake(work, "--cores", "2", "--keep-going", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for name in AGGREGATES:
        assert (work / "results" / "aggregate" / "batchnorm" / f"{name}.csv").is_file()
    assert not (work / "results" / "aggregate" / "dropout").exists()
    assert not (work / "report" / "index.html").exists()

    packs = study_packs(validate_config(config), "dropout")
    blocks = out.split("Error in rule ")[1:]
    failed = {}
    for block in blocks:
        lines = [line.strip() for line in block.splitlines()[:12]]
        fields = dict(line.split(": ", 1) for line in lines if ": " in line)
        failed[fields["output"]] = fields["log"]
    assert set(failed) == {f"results/runs/dropout/{pack}/chunk0" for pack in packs}
    for output, log in failed.items():
        log_path = log.split(" ")[0].rstrip(",")  # the run log, before the metrics CSV
        assert log_path == output.replace("results/runs/", "logs/train/") + ".log"
        text = (work / log_path).read_text()
        assert text.strip().splitlines()[-1].startswith(f"python -m reglab train: error: dataset file {corrupt}: ")
        assert "Traceback" not in text
        assert not (work / output).exists()  # a failed job's output is removed


# --------------------------------------------------------------------------- a real run directory
@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """One job's run directory written by ``python -m reglab train`` (2 seeds, 3 epochs)."""
    root = tmp_path_factory.mktemp("real_run")
    config = validate_config(tiny_config())
    spec = variant_spec(config, "batchnorm", "baseline")
    spec["training"]["epochs"] = 3
    dataset = root / "data.npz"
    assert main(["dataset", "--spec", json.dumps({k: v for k, v in spec["dataset"].items() if k != "name"}),
                 "--out", str(dataset)]) == 0
    assert main(["train", "--spec", json.dumps(spec), "--dataset", str(dataset), "--seeds", "0,1",
                 "--outdir", str(root / "runs" / "chunk0")]) == 0
    return root / "runs" / "chunk0" / "baseline"


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def as_chunk(run: Path, dest: Path, chunk: int, seed_offset: int, **meta_changes) -> Path:
    """A copy of ``run`` as another chunk of the same variant: its seeds shifted by ``seed_offset``."""
    dest = copy_run(run, dest)
    for name in ("history.csv", "final.csv"):
        frame = pd.read_csv(dest / name)
        frame["seed"] += seed_offset
        frame.to_csv(dest / name, index=False)
    meta = json.loads((dest / "meta.json").read_text())
    meta.update(chunk=chunk, seeds=[s + seed_offset for s in meta["seeds"]], **meta_changes)
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


def aggregate_cli(runs: list[Path], outdir: Path, capsys) -> tuple[int, str]:
    code = main(["aggregate", "--runs", *map(str, runs), "--outdir", str(outdir)])
    return code, capsys.readouterr().err


def edit_meta(**changes):
    def damage(path: Path) -> None:
        meta = json.loads(path.read_text())
        for key, value in changes.items():
            if value is KeyError:
                del meta[key]
            else:
                meta[key] = value
        path.write_text(json.dumps(meta))
    return damage


def cut_last_epoch(path: Path) -> None:
    """history.csv without its last epoch: every seed still has epochs 1..E-1 once each."""
    frame = pd.read_csv(path)
    frame[frame["epoch"] < frame["epoch"].max()].to_csv(path, index=False)


def rename_column(old: str, new: str):
    def damage(path: Path) -> None:
        text = path.read_text()
        path.write_text(text.replace(old, new, 1))
    return damage


# --------------------------------------------------------------------------- 3. damaged results
@pytest.mark.parametrize("name, damage, message", [
    ("history.csv", lambda p: p.write_bytes(p.read_bytes()[:-7]), "truncated"),
    ("history.csv", cut_last_epoch, "spec trains 3 epochs"),
    ("final.csv", lambda p: p.write_bytes(p.read_bytes()[: p.read_bytes().rindex(b"\n", 0, -1) + 1]), "truncated"),
    ("history.csv", rename_column("test_acc", "val_acc"), "wrong columns"),
    ("final.csv", rename_column("seed", "replica"), "wrong columns"),
    ("history.csv", lambda p: p.write_bytes(b"\xff\xfe\x00garbage\n" * 3), "cannot be parsed as CSV"),
    ("meta.json", edit_meta(schema_version=2), "schema_version 2"),
    ("meta.json", edit_meta(schema_version="1"), "schema_version '1'"),
    ("meta.json", edit_meta(schema_version=KeyError), "missing keys ['schema_version']"),
    ("meta.json", edit_meta(seeds=["zero", "one"]), "'seeds' must be non-negative integers"),
    ("meta.json", edit_meta(chunk="first"), "'chunk' must be a non-negative integer"),
    ("meta.json", lambda p: p.write_text(p.read_text()[:40]), "not valid JSON"),
])
def test_a_damaged_results_file_is_one_line_naming_it(real_run, tmp_path, capsys, name, damage, message):
    run = copy_run(real_run, tmp_path / "run")
    damage(run / name)
    code, err = aggregate_cli([run], tmp_path / "agg", capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert str(run / name) in err and message in err and "Traceback" not in err
    assert not (tmp_path / "agg").exists()


def test_jobs_of_one_variant_from_different_configs_are_not_mixed(real_run, tmp_path, capsys):
    spec = json.loads((real_run / "meta.json").read_text())["spec"]
    first = copy_run(real_run, tmp_path / "chunk0")
    same = as_chunk(real_run, tmp_path / "chunk1", chunk=1, seed_offset=2)
    # the same training under another study's name (a shared run): still one config
    renamed = as_chunk(real_run, tmp_path / "chunk2", chunk=2, seed_offset=4, study="elsewhere",
                       spec={**spec, "study": "elsewhere"}, config_hash="fedcba9876543210")
    for name in ("history.csv", "final.csv"):
        frame = pd.read_csv(renamed / name)
        frame.assign(study="elsewhere").to_csv(renamed / name, index=False)
    other_spec = {**spec, "training": {**spec["training"], "batch_size": 7}}
    other = as_chunk(real_run, tmp_path / "chunk3", chunk=3, seed_offset=6, spec=other_spec)
    assert aggregate_cli([first, same, renamed], tmp_path / "ok", capsys)[0] == 0  # one config: fine
    assert len(pd.read_csv(tmp_path / "ok" / "per_seed.csv")) == 6

    code, err = aggregate_cli([first, same, other], tmp_path / "agg", capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(other / "meta.json") in err and str(first / "meta.json") in err
    assert "spec hash (without names)" in err and "different configs" in err
    assert not (tmp_path / "agg").exists()


def test_the_aggregate_command_exits_2_with_one_line_and_no_traceback(real_run, tmp_path):
    run = copy_run(real_run, tmp_path / "run")
    edit_meta(schema_version=99)(run / "meta.json")
    proc = subprocess.run([sys.executable, "-m", "reglab", "aggregate", "--runs", str(run), "--outdir",
                           str(tmp_path / "agg")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"python -m reglab aggregate: error: {run / 'meta.json'}: schema_version 99, but this reglab reads "
        f"schema_version 1 (written by another version: rerun its training job)"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["history.csv", "final.csv", "meta.json"]), cut=st.floats(0, 1, exclude_max=True))
def test_any_truncated_results_file_is_refused_naming_it(real_run, name, cut):
    """A results file cut anywhere (a crash without atomic writes) is never aggregated."""
    with tempfile.TemporaryDirectory() as tmp:
        run = copy_run(real_run, Path(tmp) / "run")
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: int(cut * len(data))])
        with pytest.raises(ResultsError) as err:
            aggregate_study([run], Path(tmp) / "agg")
        assert str(run / name) in str(err.value)
        assert not (Path(tmp) / "agg").exists()


# --------------------------------------------------------------------------- 4. disk full, read-only
def fail_for(target_dir: Path, err: int, real):
    """A stand-in for os.replace(src, dst) that fails with ``err`` for files under ``target_dir``."""
    def replace(src, dst, *args, **kwargs):
        if Path(dst).parent == target_dir or target_dir in Path(dst).parents:
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
        return real(src, dst, *args, **kwargs)
    return replace


def refuse_temp_files(monkeypatch, err: int) -> None:
    """Make creating any ``*.tmp`` file fail with ``err`` (as in a read-only folder)."""
    real = os.open

    def open_(path, flags, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise OSError(err, os.strerror(err), str(path))
        return real(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", open_)


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


@pytest.mark.parametrize("where", ["replace", "write", "create"])
def test_atomic_write_failure_keeps_the_old_file_and_names_the_path(tmp_path, monkeypatch, where):
    path = tmp_path / "final.csv"
    path.write_text("old, complete content\n")
    write = lambda fh: fh.write(b"new content\n")  # noqa: E731
    if where == "replace":  # disk full when the rename
        monkeypatch.setattr(os, "replace", fail_for(tmp_path, errno.ENOSPC, os.replace))
    elif where == "write":  # disk full half-way through writing
        def write(fh):
            fh.write(b"half of the new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    else:  # a read-only folder: the temporary file cannot be created
        refuse_temp_files(monkeypatch, errno.EROFS)
    with pytest.raises(OSError) as exc:
        contract.atomic_write(path, write)
    assert exc.value.filename == str(path)
    assert exc.value.errno == (errno.EROFS if where == "create" else errno.ENOSPC)
    assert path.read_text() == "old, complete content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["final.csv"]


def test_aggregate_on_a_full_disk_keeps_the_old_aggregates(real_run, tmp_path, monkeypatch, capsys):
    run = copy_run(real_run, tmp_path / "run")
    out = tmp_path / "agg"
    assert aggregate_cli([run], out, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(os, "replace", fail_for(out, errno.ENOSPC, os.replace))
    code, err = aggregate_cli([run], out, capsys)
    assert code == 1
    assert err.strip().splitlines() == [f"python -m reglab aggregate: error: {out / 'finals.csv'}: "
                                        "No space left on device"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert no_temp_files(out)


def test_aggregate_into_a_read_only_folder_is_one_line(real_run, tmp_path, monkeypatch, capsys):
    run = copy_run(real_run, tmp_path / "run")
    out = tmp_path / "agg"
    out.mkdir()

    refuse_temp_files(monkeypatch, errno.EROFS)
    code, err = aggregate_cli([run], out, capsys)
    assert code == 1
    assert err.strip().splitlines() == [f"python -m reglab aggregate: error: {out / 'finals.csv'}: "
                                        "Read-only file system"]
    assert list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_aggregate_into_a_really_read_only_folder(real_run, tmp_path, capsys):
    run = copy_run(real_run, tmp_path / "run")
    out = tmp_path / "agg"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, err = aggregate_cli([run], out, capsys)
    finally:
        out.chmod(0o755)
    assert code == 1 and len(err.strip().splitlines()) == 1 and str(out / "finals.csv") in err


def test_training_on_a_full_disk_keeps_the_old_run_directory(real_run, tmp_path, monkeypatch, capsys):
    """Retraining into an existing run directory when the disk is full: one line naming the file,
    every file already there unchanged, no temporary file left."""
    meta = json.loads((real_run / "meta.json").read_text())
    outdir = tmp_path / "chunk0"
    run = copy_run(real_run, outdir / real_run.name)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    dataset = tmp_path / "data.npz"
    spec = meta["spec"]
    assert main(["dataset", "--spec", json.dumps({k: v for k, v in spec["dataset"].items() if k != "name"}),
                 "--out", str(dataset)]) == 0
    monkeypatch.setattr(os, "replace", fail_for(run, errno.ENOSPC, os.replace))
    capsys.readouterr()
    code = main(["train", "--spec", json.dumps(spec), "--dataset", str(dataset), "--seeds", "0,1",
                 "--outdir", str(outdir)])
    err = capsys.readouterr().err
    assert code == 1  # (Lightning may warn on stderr before: e.g. that srun is not used)
    assert err.strip().splitlines()[-1] == (f"python -m reglab train: error: {run / 'history.csv'}: "
                                            "No space left on device")
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert no_temp_files(outdir)


def test_dataset_on_a_full_disk_names_the_dataset_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "d.npz"
    spec = {k: v for k, v in validate_config(tiny_config())["datasets"]["circles_100"].items()}
    monkeypatch.setattr(os, "replace", fail_for(tmp_path, errno.ENOSPC, os.replace))
    code = main(["dataset", "--spec", json.dumps(spec), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [f"python -m reglab dataset: error: {out}: No space left on device"]
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 6. arguments of every step
DATASET_SPEC = {"generator": "make_circles", "params": {"n_samples": 60, "noise": 0.1, "random_state": 1},
                "n_train": 20}


@pytest.mark.parametrize("args, message", [
    (["dataset", "--spec", "{nope", "--out", "d.npz"], "not valid JSON"),
    (["dataset", "--spec", "[1, 2]", "--out", "d.npz"], "must be a JSON object"),
    (["dataset", "--out", "d.npz"], "--spec"),
    (["dataset", "--spec", json.dumps(DATASET_SPEC)], "--out"),
    (["aggregate", "--outdir", "agg"], "--runs"),
    (["aggregate", "--runs", "FILE", "--outdir", "agg"], "directory not found"),
    (["aggregate", "--runs", "RUN"], "--outdir"),
    (["report", "--config", "missing.json", "--results", "RESULTS", "--out", "x.html"], "file not found: missing.json"),
    (["report", "--config", "FILE", "--results", "RESULTS"], "--out"),
    (["report", "--config", "FILE", "--results", "FILE", "--out", "x.html"], "directory not found"),
    (["train", "--spec", "{}", "--dataset", "FILE", "--seeds", "-1", "--outdir", "o"], "non-negative"),
    (["train", "--spec", "{}", "--dataset", "FILE", "--seeds", "0", "--chunk", "one", "--outdir", "o"], "invalid int"),
    (["train", "--spec", "{}", "--dataset", "FILE", "--seeds", "0", "--accelerator", "tpu", "--outdir", "o"],
     "invalid choice"),
])
def test_wrong_types_and_missing_arguments_are_usage_errors(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "run").mkdir()
    args = [{"FILE": "a_file", "RUN": "run", "RESULTS": str(tmp_path)}.get(a, a) for a in args]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "run"]  # nothing written


@pytest.mark.parametrize("args, message", [
    (["dataset", "--spec", "{}", "--out", "d.npz"], "--spec: not a dataset spec (no key 'generator')"),
    (["dataset", "--spec", json.dumps({**DATASET_SPEC, "params": {"n_samples": "many"}}), "--out", "d.npz"],
     "--spec: not a valid dataset spec"),
    (["dataset", "--spec", json.dumps({**DATASET_SPEC, "generator": "make_everything"}), "--out", "d.npz"],
     "unknown generator 'make_everything'"),
    (["train", "--spec", "{}", "--dataset", "FILE", "--seeds", "0", "--outdir", "o"],
     "--spec: spec 0 is not a variant spec (missing keys ['study', 'variant', 'dataset', 'training', 'layers'])"),
    (["aggregate", "--runs", "RUN", "--outdir", "agg"], "run/meta.json: results file is missing"),
    (["report", "--config", "FILE", "--results", "RESULTS", "--out", "x.html"],
     "a_file: cannot be read as JSON"),
    (["report", "--config", "UNVALIDATED", "--results", "RESULTS", "--out", "x.html"],
     "unvalidated.json: not a validated config written by the workflow"),
    (["report", "--config", "CONFIG", "--results", "RESULTS", "--out", "x.html"],
     "aggregate file is missing"),
    (["report", "--config", "CONFIG", "--results", "RESULTS", "--run-info", "FILE", "--out", "x.html"],
     "--run-info a_file: not valid JSON"),
])
def test_bad_inputs_to_every_step_are_one_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("{not json")
    (tmp_path / "run").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"format": contract.CONFIG_FORMAT, "config_hash": "h",
                                                      "config": validate_config(tiny_config())}))
    (tmp_path / "unvalidated.json").write_text(json.dumps(tiny_config()))
    names = {"FILE": "a_file", "RUN": "run", "RESULTS": str(tmp_path), "CONFIG": "config.json",
             "UNVALIDATED": "unvalidated.json"}
    assert main([names.get(a, a) for a in args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "config.json", "run", "unvalidated.json"]
