"""Cluster execution: profiles/slurm parses and plans (fast); the workflow on a real single-node
SLURM, checked against a local run (slow: .ci/slurm.sh, which needs root and apt-get).

In CI (``CI=true``), as root with apt-get, the real-SLURM test must run: a skip there, and a missing
slurm executor plugin anywhere, fails instead. Elsewhere they skip with the reason."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import ci as ci_module  # tests/ci.py
from ci import in_ci, required_here, skip_unless_required
from workdirs import make_workdir as workdir  # tests/workdirs.py

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
SCRIPT = REPO / ".ci" / "slurm.sh"
PLUGIN = "snakemake_executor_plugin_slurm"


def require_plugin() -> None:
    """The slurm executor plugin: installed by the [test] extra, so missing it in CI is a failure."""
    try:
        __import__(PLUGIN)
    except ImportError as exc:
        skip_unless_required(f"needs {PLUGIN} (pip install -e '.[slurm]'): {exc}", in_ci())


def dry_run(work: Path, *args: str, **env: str) -> str:
    """`snakemake -n --workflow-profile profiles/slurm --configfile config/tiny.yaml ARGS`: its output."""
    require_plugin()
    bindir = str(Path(sys.executable).parent)
    pythonpath = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    environ = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"], "PYTHONPATH": pythonpath, **env}
    for name in ("REGLAB_SLURM_ACCOUNT", "REGLAB_SLURM_PARTITION"):
        if name not in env:
            environ.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--workflow-profile", "profiles/slurm",
         "--configfile", "config/tiny.yaml", *args],
        cwd=work, env=environ, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def resource_lines(out: str, rule: str) -> list[str]:
    """The `resources:` lines of the jobs of one rule in a dry run's output."""
    lines, current = [], None
    for line in out.splitlines():
        stripped = line.strip()
        if stripped.startswith(("rule ", "localrule ")):
            current = stripped.split()[1].rstrip(":")
        elif stripped.startswith("resources:") and current == rule:
            lines.append(stripped)
    return lines


def test_slurm_profile_parses_with_the_knobs_a_user_sets():
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert isinstance(profile["jobs"], int) and profile["jobs"] >= 1
    assert profile["retries"] == 2
    assert profile["latency-wait"] >= 5
    resources = profile["default-resources"]
    assert resources["slurm_account"] == "$REGLAB_SLURM_ACCOUNT"
    assert resources["slurm_partition"] == "$REGLAB_SLURM_PARTITION"
    text = (PROFILE / "config.yaml").read_text()
    assert "MUST SET" in text  # the two knobs are marked as such
    for option in ("#groups:", "#group-components:", "#cores: 1"):  # the optional grouping, documented
        assert option in text


def resource(line: str, name: str) -> int:
    return int(line.split(f" {name}=")[1].split(",")[0])


def test_slurm_profile_plans_the_tiny_config(tmp_path):
    """The issue's command: plans every job; dry runs do not contact SLURM."""
    out = dry_run(workdir(tmp_path))
    assert "This was a dry-run" in out
    train = resource_lines(out, "train")
    assert len(train) >= 8
    for line in train:
        # the train rule's own resources (workflow/rules/common.smk): memory within 2x of what its
        # jobs were measured to use (~470-610 MB peak); they take 6-40 s, estimated as 1 minute
        # (SLURM counts whole minutes), and ask for twice that and a minute more
        assert 600 <= resource(line, "mem_mb") <= 1200, line
        assert resource(line, "runtime") == 3, line
    assert resource_lines(out, "dataset") and "Group job" not in out


def test_slurm_profile_takes_account_and_partition_from_the_environment(tmp_path):
    out = dry_run(workdir(tmp_path), REGLAB_SLURM_ACCOUNT="lab42", REGLAB_SLURM_PARTITION="short")
    for line in resource_lines(out, "train"):
        assert "slurm_account=lab42" in line and "slurm_partition=short" in line, line


def test_slurm_profile_optional_grouping_plans(tmp_path):
    out = dry_run(workdir(tmp_path), "--groups", "train=train", "--group-components", "train=8", "--cores", "1")
    assert "Group job train" in out


def tiny_with(work: Path, **settings) -> Path:
    config = yaml.safe_load((work / "config" / "tiny.yaml").read_text())
    config.update(settings)
    (work / "config" / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work


def test_gpu_training_jobs_ask_for_memory_for_cuda(tmp_path):
    cpu = [resource(line, "mem_mb") for line in resource_lines(dry_run(workdir(tmp_path / "cpu")), "train")]
    gpu_out = dry_run(tiny_with(workdir(tmp_path / "gpu"), accelerator="gpu"))
    gpu = [resource(line, "mem_mb") for line in resource_lines(gpu_out, "train")]
    assert sorted(g - c for c, g in zip(sorted(cpu), sorted(gpu))) == [2048] * len(cpu)


def test_only_gpu_accelerator_requests_a_gpu(tmp_path):
    for accelerator, gpus in [("gpu", 1), ("cpu", 0), ("auto", 0)]:
        out = dry_run(tiny_with(workdir(tmp_path / accelerator), accelerator=accelerator))
        for line in resource_lines(out, "train"):
            assert f" gpu={gpus}," in line + ",", line


def run_slurm_script(script: Path, required: bool, timeout: int = 900) -> str:
    """Run ``script`` (.ci/slurm.sh) as the real-SLURM test does: fail on an error or on a "SKIP:" line
    where ``required``; skip on "SKIP:" otherwise. Returns its stdout."""
    if not script.is_file():
        skip_unless_required(f"{script} not found", required)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "REGLAB_PYTHON": sys.executable, "PATH": bindir + os.pathsep + os.environ["PATH"]}
    try:
        proc = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"{script} ran over {timeout} s:\n{out[-3000:]}")
    out = proc.stdout + proc.stderr
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIP:")]
    if proc.returncode == 0 and skipped:
        skip_unless_required(skipped[0][len("SKIP:"):].strip(), required)
    assert proc.returncode == 0, out[-8000:]
    assert "all checks passed" in proc.stdout, out[-8000:]
    return proc.stdout


@pytest.mark.slow
def test_workflow_on_a_real_slurm_matches_a_local_run():
    """.ci/slurm.sh: a single-node SLURM, the tiny config through profiles/slurm, checked with sacct
    and against a local run; the fault paths (time limit, unknown account and partition). In CI as
    root with apt-get it must run: its "SKIP:" fails the test there."""
    run_slurm_script(SCRIPT, required_here())


# --------------------------------------------------------------------------- when a skip is a failure
@pytest.mark.parametrize("ci, uid, apt_get, required", [
    ("true", 0, True, True),
    ("1", 0, True, True),
    ("TRUE", 0, True, True),
    ("true", 1000, True, False),  # not root: slurm.sh cannot install SLURM
    ("true", 0, False, False),  # no apt-get
    ("", 0, True, False),  # not CI: a developer's machine
    ("false", 0, True, False),
    (None, 0, True, False),
])
def test_real_slurm_is_required_only_in_ci_as_root_with_apt_get(ci, uid, apt_get, required):
    env = {} if ci is None else {"CI": ci}
    assert required_here(env, uid=uid, apt_get=apt_get) is required


def fake_script(path: Path, body: str) -> Path:
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    return path


def outcome(fn, *args) -> tuple[str, str]:
    """How ``fn(*args)`` ends for pytest: ("passed" | "failed" | "skipped", message). A skip here is
    caught too, so that the tests below fail, not skip, when a skip wrongly replaces a failure."""
    try:
        fn(*args)
    except pytest.fail.Exception as exc:
        return "failed", str(exc)
    except pytest.skip.Exception as exc:
        return "skipped", str(exc)
    except AssertionError as exc:
        return "failed", str(exc)
    return "passed", ""


SKIPPING = 'echo "SKIP: needs root to install and start SLURM"; exit 0'


@pytest.mark.parametrize("required, expected", [(True, "failed"), (False, "skipped")])
def test_a_skip_of_the_real_slurm_script_fails_only_where_it_is_required(tmp_path, required, expected):
    script = fake_script(tmp_path / "slurm.sh", SKIPPING)
    result, message = outcome(run_slurm_script, script, required)
    assert result == expected and "needs root to install and start SLURM" in message
    result, message = outcome(run_slurm_script, tmp_path / "absent.sh", required)
    assert result == expected and "not found" in message


@pytest.mark.parametrize("required", [True, False])
def test_the_real_slurm_script_passes_only_when_all_checks_pass(tmp_path, required):
    ok = fake_script(tmp_path / "ok.sh", 'echo "[slurm.sh 1s] all checks passed"')
    assert outcome(run_slurm_script, ok, required)[0] == "passed"
    for name, body in [("fails", 'echo "FAILED: x" >&2; exit 1'), ("silent", "exit 0"),
                       ("skip_then_fail", 'echo "SKIP: no"; exit 1')]:
        assert outcome(run_slurm_script, fake_script(tmp_path / f"{name}.sh", body), required)[0] == "failed", name


@pytest.mark.parametrize("ci, expected", [("true", "failed"), ("", "skipped")])
def test_the_real_slurm_test_uses_the_decision(monkeypatch, tmp_path, ci, expected):
    """The test itself, with a script that skips: fails in CI as root with apt-get, skips elsewhere."""
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "SCRIPT", fake_script(tmp_path / "slurm.sh", SKIPPING))
    monkeypatch.setattr(ci_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(ci_module.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setenv("CI", ci)
    assert outcome(module.test_workflow_on_a_real_slurm_matches_a_local_run)[0] == expected


@pytest.mark.parametrize("ci, expected", [("true", "failed"), (None, "skipped")])
def test_a_missing_plugin_fails_in_ci_and_skips_elsewhere(monkeypatch, ci, expected):
    monkeypatch.setattr(sys.modules[__name__], "PLUGIN", "no_such_plugin_module_xyz")
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result, message = outcome(require_plugin)
    assert result == expected and "no_such_plugin_module_xyz" in message
