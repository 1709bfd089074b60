"""Results follow the code (issue 14): the code-and-versions hash of what a training job runs
(reglab.provenance.code_hash), and aggregation refusing runs of different code.

The workflow side (a finished run replans exactly the jobs whose code changed; each job records the
hash Snakemake keyed it on) is in tests/test_resume.py, on the run that module trains anyway.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reglab import provenance
from reglab.aggregate import ResultsError, aggregate_study
from reglab.cli import main
from reglab.config import validate_config, variant_spec
from reglab.provenance import DATA_MODULES, TRAINING_MODULES, code_hash, code_hash_of

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "reglab"
#: what decides the numbers a training job writes (written out here, not read from the code under test)
TRAINING_FILES = ("layers.py", "model.py", "module.py", "train.py", "optim.py", "recurrent.py", "conv.py",
                  "replicas.py", "layerkinds.py", "data.py", "shapes.py", "results.py")
#: files that only aggregate, test, plot, render or document results: editing them retrains nothing
REPORT_FILES = ("report.py", "plots.py", "stats.py", "aggregate.py", "configdocs.py", "bench.py",
                "templates/report.html.j2", "templates/report.css")
#: modules a training job imports whose edits deliberately retrain nothing (provenance's docstring)
NOT_HASHED = {"config", "contract", "provenance"}


@pytest.fixture
def tree(tmp_path) -> tuple[Path, Path]:
    """A copy of the package's source folder and of requirements.lock, to edit: (package, lock)."""
    package = tmp_path / "src" / "reglab"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    lock = tmp_path / "requirements.lock"
    shutil.copy(REPO / "requirements.lock", lock)
    return package, lock


def append(path: Path, text: str = "\n# an edit\n") -> bytes:
    """Append ``text`` to ``path``; returns the bytes it had."""
    before = path.read_bytes()
    path.write_bytes(before + text.encode())
    return before


@pytest.mark.parametrize("name", TRAINING_FILES)
def test_editing_a_training_file_changes_the_training_hash(tree, name):
    package, lock = tree
    before = code_hash_of(TRAINING_MODULES, package, lock)
    assert re.fullmatch("[0-9a-f]{16}", before)
    original = append(package / name)
    assert code_hash_of(TRAINING_MODULES, package, lock) != before
    (package / name).write_bytes(original)
    assert code_hash_of(TRAINING_MODULES, package, lock) == before  # the bytes, not the file's time


@pytest.mark.parametrize("name", REPORT_FILES)
def test_editing_a_report_only_file_changes_no_hash(tree, name):
    package, lock = tree
    before = {kind: code_hash_of(kind, package, lock) for kind in (TRAINING_MODULES, DATA_MODULES)}
    append(package / name, "\n# an edit\n" if name.endswith(".py") else "\n")
    assert {kind: code_hash_of(kind, package, lock) for kind in (TRAINING_MODULES, DATA_MODULES)} == before


def test_the_dataset_hash_follows_data_py_only(tree):
    package, lock = tree
    before = code_hash_of(DATA_MODULES, package, lock)
    append(package / "layers.py")
    assert code_hash_of(DATA_MODULES, package, lock) == before
    append(package / "data.py")
    assert code_hash_of(DATA_MODULES, package, lock) != before


def test_the_locked_versions_and_the_torch_version_change_the_hash(tree, monkeypatch):
    package, lock = tree
    before = code_hash_of(TRAINING_MODULES, package, lock)
    original = lock.read_text()
    lock.write_text(original.replace("numpy==", "numpy==9", 1))
    assert "numpy==9" in lock.read_text() and code_hash_of(TRAINING_MODULES, package, lock) != before
    lock.unlink()  # an installed package has no lock file: still a hash, another one
    assert code_hash_of(TRAINING_MODULES, package, lock) != before
    lock.write_text(original)
    assert code_hash_of(TRAINING_MODULES, package, lock) == before
    real_version = provenance.metadata.version
    monkeypatch.setattr(provenance.metadata, "version",
                        lambda name: "2.99.0+cpu" if name == "torch" else real_version(name))
    assert code_hash_of(TRAINING_MODULES, package, lock) != before


def test_the_hash_is_the_same_in_another_place(tree):
    package, lock = tree
    assert code_hash_of(TRAINING_MODULES, package, lock) == code_hash_of(TRAINING_MODULES, PACKAGE,
                                                                          REPO / "requirements.lock")


def reglab_imports(path: Path) -> set[str]:
    """The reglab modules ``path`` imports (statements anywhere, and "reglab.NAME" strings that
    importlib.import_module loads), by their AST."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # from . import x / from .x import y
                found.update([module.split(".")[0]] if module else [a.name for a in node.names])
            elif module == "reglab":
                found.update(a.name for a in node.names)
            elif module.startswith("reglab."):
                found.add(module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("reglab."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.update(re.findall(r"^reglab\.(\w+)$", node.value))
    return {name for name in found if (PACKAGE / f"{name}.py").is_file()}


def test_every_module_a_training_or_dataset_job_runs_is_hashed():
    """The modules `python -m reglab train` / `dataset` reach (cli.cmd_train's imports: results,
    train, data, and what they import), but the documented exceptions, are all in the hash."""
    reached, todo = set(), ["results", "train", "data"]
    while todo:
        name = todo.pop()
        if name in reached or name in NOT_HASHED:
            continue
        reached.add(name)
        todo.extend(reglab_imports(PACKAGE / f"{name}.py"))
    assert {"layers", "recurrent", "conv", "optim", "model", "module", "replicas"} <= reached  # the walk works
    assert reached <= set(TRAINING_MODULES), f"not hashed: {sorted(reached - set(TRAINING_MODULES))}"
    assert reglab_imports(PACKAGE / "data.py") - NOT_HASHED <= set(DATA_MODULES)


def test_code_hash_imports_no_torch_and_reads_the_files_once(monkeypatch):
    proc = subprocess.run([sys.executable, "-c", "import sys; from reglab.provenance import code_hash; "
                           "print(code_hash(), 'torch' in sys.modules)"], capture_output=True, text=True, check=True)
    digest, torch_imported = proc.stdout.split()
    assert re.fullmatch("[0-9a-f]{16}", digest) and torch_imported == "False"
    code_hash()
    monkeypatch.setattr(provenance, "code_hash_of", lambda *a, **k: pytest.fail("computed twice"))
    assert code_hash() == code_hash()


# --------------------------------------------------------------------------- aggregation
def set_code(run: Path, digest: str | None) -> Path:
    meta = json.loads((run / "meta.json").read_text())
    meta.pop("code_hash", None)
    if digest is not None:
        meta["code_hash"] = digest
    (run / "meta.json").write_text(json.dumps(meta))
    return run


def test_aggregation_refuses_runs_of_different_code(synthetic_results, tmp_path, capsys):
    runs = synthetic_results.run_dirs["bn"]  # 3 variants x 2 jobs, written by hand (tests/conftest.py)
    for run in runs:
        set_code(run, "1111111111111111")
    aggregate_study(runs, tmp_path / "same")  # one code: fine
    assert (tmp_path / "same" / "per_seed.csv").is_file()

    stale = set_code(runs[-1], "2222222222222222")  # another variant's job, trained by other code
    assert json.loads((stale / "meta.json").read_text())["variant"] != json.loads(
        (runs[0] / "meta.json").read_text())["variant"]
    with pytest.raises(ResultsError) as err:
        aggregate_study(runs, tmp_path / "mixed")
    message = str(err.value)
    assert str(stale / "meta.json") in message and str(runs[0] / "meta.json") in message
    assert "'2222222222222222'" in message and "'1111111111111111'" in message
    assert "different code" in message and "rerun the training" in message
    assert not (tmp_path / "mixed").exists()

    code = main(["aggregate", "--runs", *map(str, runs), "--outdir", str(tmp_path / "cli")])  # the rule's command
    out = capsys.readouterr().err
    assert code == 2 and len(out.strip().splitlines()) == 1 and "'2222222222222222'" in out, out

    set_code(stale, None)  # a run from before code hashes were recorded is not mixed with one after
    with pytest.raises(ResultsError, match="no code_hash .* has code_hash '1111111111111111'"):
        aggregate_study(runs, tmp_path / "old")


def test_a_code_hash_that_is_not_a_string_is_refused(synthetic_results, tmp_path):
    run = set_code(synthetic_results.run_dirs["bn"][0], None)
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "code_hash": 12}))
    with pytest.raises(ResultsError, match="'code_hash' must be a string"):
        aggregate_study([run], tmp_path / "agg")


# --------------------------------------------------------------------------- a training job
def test_a_training_job_records_its_own_code_hash_and_warns_when_the_workflow_planned_another(tmp_path, capsys):
    config = validate_config(yaml.safe_load((REPO / "config" / "tiny.yaml").read_text()))
    spec = variant_spec(config, "batchnorm", "baseline")
    spec["training"]["epochs"] = 1
    dataset = tmp_path / "d.npz"
    assert main(["dataset", "--spec", json.dumps({k: v for k, v in spec["dataset"].items() if k != "name"}),
                 "--out", str(dataset)]) == 0
    planned = "0123456789abcdef"
    assert main(["train", "--spec", json.dumps(spec), "--dataset", str(dataset), "--seeds", "0",
                 "--code-hash", planned, "--outdir", str(tmp_path / "job")]) == 0
    out = capsys.readouterr().out
    recorded = json.loads((tmp_path / "job" / "baseline" / "meta.json").read_text())["code_hash"]
    assert re.fullmatch("[0-9a-f]{16}", recorded) and recorded != planned
    assert f"warning: this job's code hash {recorded} is not the workflow's {planned}" in out
