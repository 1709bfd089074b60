"""Installs that hold anywhere: the lock check (tools/check_lock.py), the conda environment file, and
the workflow under --sdm conda with the environment created elsewhere (a stand-in for conda: this
project's machines have none)."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
ENV_FILE = REPO / "workflow" / "envs" / "reglab.yaml"


def load_tool():
    spec = importlib.util.spec_from_file_location("check_lock", REPO / "tools" / "check_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_lock(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "check_lock.py"), *args],
                          capture_output=True, text=True, timeout=120)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonical(name)] = version
    return pins


# --------------------------------------------------------------------------- tools/check_lock.py
def test_the_real_lock_pins_everything_this_install_pulled():
    proc = check_lock("--extras", "test")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"all \d+ packages", proc.stdout)


@pytest.mark.parametrize("victim", ["numpy", "PyYAML", "setuptools"])
def test_a_lock_missing_a_package_fails_naming_it(tmp_path, victim):
    lines = LOCK.read_text().splitlines()
    kept = [line for line in lines if not line.lower().startswith(victim.lower() + "==")]
    assert len(kept) == len(lines) - 1
    fake = tmp_path / "requirements.lock"
    fake.write_text("\n".join(kept) + "\n")
    proc = check_lock("--lock", str(fake), "--extras", "test")
    assert proc.returncode == 1
    assert f"{canonical(victim)}=={metadata.version(victim)}: installed but missing from the lock" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_lock_pinning_another_version_fails_naming_both(tmp_path):
    installed = metadata.version("jsonschema")
    fake = tmp_path / "requirements.lock"
    fake.write_text(LOCK.read_text().replace(f"jsonschema=={installed}\n", "jsonschema==0.0.1\n"))
    proc = check_lock("--lock", str(fake))
    assert proc.returncode == 1
    assert f"jsonschema=={installed}: installed, but the lock pins jsonschema==0.0.1" in proc.stderr


def test_a_local_build_label_matches_its_public_pin():
    """The lock pins torch==2.13.0; the CPU wheel installs as 2.13.0+cpu (PEP 440: == ignores the label)."""
    tool = load_tool()
    assert tool.problems({"torch": "2.13.0"}, {"torch": "2.13.0+cpu"}) == []
    assert tool.problems({"torch": "2.13.0"}, {"torch": "2.13.1+cpu"}) != []


def test_extras_are_followed_only_when_installed_with_them():
    """The plain install pulls no test tools; with the test extra the closure holds pytest."""
    tool = load_tool()
    plain, test = tool.closure("reglab"), tool.closure("reglab", ("test",))
    assert "pytest" not in plain and "pytest" in test
    assert {"torch", "numpy", "snakemake"} <= set(plain) <= set(test)


# --------------------------------------------------------------------------- workflow/envs/reglab.yaml
def env_pip() -> list[str]:
    spec = yaml.safe_load(ENV_FILE.read_text())
    pips = [d["pip"] for d in spec["dependencies"] if isinstance(d, dict)]
    assert len(pips) == 1
    return pips[0]


def test_the_conda_environment_names_no_path():
    """Snakemake copies the file to its conda prefix and conda runs pip from there: a relative path
    (the repository as ``-e ../..``, ``-c ../../requirements.lock``) would point elsewhere."""
    for entry in env_pip():
        assert not re.search(r"(^|\s)(\.|/|~|file:)", entry), entry
        assert not entry.startswith(("-e", "--editable", "-r", "--requirement", "-c", "--constraint")), entry


def test_the_conda_environment_pins_the_locks_versions_of_every_runtime_dependency():
    lock = lock_pins()
    pins = {}
    for entry in env_pip():
        if not entry.startswith("-"):
            req = Requirement(entry)
            (spec,) = req.specifier
            assert spec.operator == "==", entry
            pins[canonical(req.name)] = spec.version
    assert {name: lock.get(name) for name in pins} == pins  # every pin is the lock's
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = {canonical(Requirement(r).name) for r in project["dependencies"]}
    assert direct <= set(pins), direct - set(pins)
    for name in pins:  # ... and so is whatever those need, as installed here (no extras)
        for text in metadata.requires(name) or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                assert canonical(req.name) in pins, f"{name} requires {req.name}, not in {ENV_FILE.name}"
    assert "reglab" not in pins


# --------------------------------------------------------------------------- --sdm conda, elsewhere
FAKE_CONDA = '''#!{python}
"""A stand-in for conda: the calls Snakemake's --sdm conda makes. `env create` makes an environment
whose python has this machine's packages but not reglab, after resolving the pip section's paths
from the environment file's folder, as conda does (pip runs there)."""
import json, os, re, sys
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
args = sys.argv[1:]
if args == ["--version"]:
    print("conda 25.1.1")
elif args[:2] == ["info", "--json"]:
    print(json.dumps({{"conda_prefix": str(ROOT), "root_prefix": str(ROOT), "platform": "linux-64",
                      "conda_version": "25.1.1", "envs_dirs": []}}))
elif args[:2] == ["config", "--get"]:
    print(json.dumps({{"get": {{"channel_priority": "strict"}}}}))
elif args[:1] == ["clean"]:
    pass
elif args[:2] == ["env", "create"]:
    file, prefix = Path(args[args.index("--file") + 1]), Path(args[args.index("--prefix") + 1])
    (ROOT / "created.json").write_text(json.dumps({{"file": str(file), "prefix": str(prefix)}}))
    for dep in yaml.safe_load(file.read_text())["dependencies"]:
        for entry in dep["pip"] if isinstance(dep, dict) else ():
            path = re.sub(r"^(-e|--editable|-r|--requirement|-c|--constraint)\\s+", "", entry)
            if path.startswith((".", "/")) and not (file.parent / path).exists():
                sys.exit(f"ERROR: {{path}} does not exist (from {{file.parent}})")
    (prefix / "bin").mkdir(parents=True)
    python = prefix / "bin" / "python"
    python.write_text('#!/bin/sh\\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}" exec {base} -s "$@"\\n')
    python.chmod(0o755)
else:
    sys.exit(f"fake conda: unexpected {{args}}")
'''


def fake_conda(root: Path) -> Path:
    """A conda installation stand-in under ``root``; returns its bin folder."""
    bindir = root / "bin"
    bindir.mkdir(parents=True)
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    conda = bindir / "conda"
    conda.write_text(FAKE_CONDA.format(python=sys.executable, site=sysconfig.get_paths()["purelib"], base=base))
    conda.chmod(0o755)
    (bindir / "activate").write_text('export PATH="$1/bin:$PATH"\n')
    return bindir


@pytest.mark.slow
def test_sdm_conda_creates_the_environment_anywhere_and_jobs_run_this_checkouts_code(tmp_path):
    """Snakemake runs from an environment without reglab; the conda environment goes to another
    --conda-prefix; the dataset job runs in it and imports reglab from the checkout's src/."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = sysconfig.get_paths()["purelib"]
    no_reglab = subprocess.run([base, "-s", "-c", "import reglab"], env={"PYTHONPATH": site}, capture_output=True)
    assert no_reglab.returncode != 0  # site-packages on PYTHONPATH: no .pth, so no editable reglab
    bindir = fake_conda(tmp_path / "conda")
    prefix, work = tmp_path / "elsewhere" / "envs", tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": site}
    proc = subprocess.run(
        [base, "-s", "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
         "--configfile", str(REPO / "config" / "tiny.yaml"), "--config", f"published={REPO / 'config' / 'published.yaml'}",
         "--cores", "1", "--sdm", "conda", "--conda-prefix", str(prefix), "results/datasets/circles_100.npz"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    log = work / "logs" / "dataset" / "circles_100.log"
    assert proc.returncode == 0, proc.stderr[-4000:] + (log.read_text() if log.exists() else "")
    created = json.loads((tmp_path / "conda" / "created.json").read_text())
    assert Path(created["prefix"]).parent == prefix and Path(created["file"]).parent == prefix
    assert (work / "results" / "datasets" / "circles_100.npz").stat().st_size > 1000


# --------------------------------------------------------------------------- the workflow catalog
def test_the_catalog_settings_declare_conda_and_the_report():
    """The keys the catalog's generator reads (usage.mandatory-flags, usage.software-stack-deployment,
    usage.report), and an MIT LICENSE beside them."""
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage["mandatory-flags"]) == {"desc", "flags"} and usage["mandatory-flags"]["desc"].strip()
    assert usage["software-stack-deployment"] == {"conda": True, "apptainer": False, "apptainer+conda": False}
    assert usage["report"] is True
    assert ENV_FILE.is_file()
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "Copyright (c) 2026 the reglab authors" in license_text


@pytest.mark.parametrize("profile", ["default", "slurm"])
def test_profiles_run_the_run_rules_in_threads(profile):
    """The workflow's `run:` rules (config, pack specs, study runs, sequential looks) write small
    files; in a new process each would parse the whole workflow again (~3.5 s of CPU, ~45 jobs)."""
    settings = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    assert settings.get("force-use-threads") is True
