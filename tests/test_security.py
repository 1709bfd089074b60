"""Security (issue 7): nothing is unpickled from disk, YAML is read safely, the report escapes what it
shows, names are restricted before they reach a path or a shell, and the rules' shell commands quote
every config-derived value.

The report's escaping of a hostile study title and claim text is tested in tests/test_report.py
(``EVIL``); the pickled-dataset refusal in tests/test_cli.py. Not repeated here.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reglab.config import ConfigError, validate_config
from workdirs import make_workdir  # tests/workdirs.py

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "reglab"
RULES = sorted((REPO / "workflow" / "rules").glob("*.smk")) + [REPO / "Snakefile"]
TINY = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())

# Calls that unpickle (or may): never allowed on data from disk.
FORBIDDEN_CALLS = re.compile(r"^(c?pickle|dill|cloudpickle|joblib|marshal|shelve)\.|(^|\.)read_pickle$"
                             r"|^yaml\.(load|load_all|unsafe_load|unsafe_load_all|full_load|full_load_all)$")
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def dotted(node: ast.AST) -> str:
    """``np.load`` for the call ``np.load(...)``; "" for what is not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def keyword_is(call: ast.Call, name: str, value) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def package_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                calls.append((f"{path.relative_to(REPO)}:{node.lineno}", node))
    return calls


def test_nothing_is_unpickled_from_disk():
    problems, np_loads = [], 0
    for where, call in package_calls():
        name = dotted(call.func)
        if FORBIDDEN_CALLS.search(name):
            problems.append(f"{where}: {name}()")
        elif name in ("np.load", "numpy.load"):
            np_loads += 1
            if not keyword_is(call, "allow_pickle", False):
                problems.append(f"{where}: {name}() without allow_pickle=False")
        elif name == "torch.load" and not keyword_is(call, "weights_only", True):
            problems.append(f"{where}: torch.load() without weights_only=True")
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            problems += [f"{path.relative_to(REPO)}:{node.lineno}: imports {m}" for m in modules
                         if m.split(".")[0] in FORBIDDEN_MODULES]
    assert not problems
    assert np_loads >= 2  # datasets and decision boundaries are read, without pickle


def test_yaml_is_read_with_safe_load_everywhere():
    safe = [where for where, call in package_calls() if dotted(call.func) == "yaml.safe_load"]
    assert len(safe) >= 2  # the config (and its schema) and the published numbers
    for path in RULES:  # the rules' Python, too
        text = path.read_text()
        assert not re.search(r"\b(pickle|yaml\.(load|unsafe_load|full_load))\b", text), path
        assert not re.search(r"\b(np|numpy)\.load\(", text) and "torch.load(" not in text, path


def test_every_jinja_environment_autoescapes_and_templates_mark_nothing_safe():
    environments = [(where, call) for where, call in package_calls() if dotted(call.func).endswith("Environment")]
    assert environments
    for where, call in environments:
        autoescape = [k for k in call.keywords if k.arg == "autoescape"]
        assert autoescape and not (isinstance(autoescape[0].value, ast.Constant) and not autoescape[0].value.value), where
    for template in (PACKAGE / "templates").glob("*.j2"):
        text = template.read_text()
        assert not re.search(r"\|\s*safe\b|autoescape\s+false", text), template
    assert not [w for w, call in package_calls() if dotted(call.func) in ("Markup", "markupsafe.Markup")]


# --------------------------------------------------------------------------- names
HOSTILE_NAMES = ["../x", "$(rm -rf /)", "a/../../b", "x;rm -rf ~", "`reboot`"]


def renamed(config: dict, where: str, new: str) -> dict:
    """``config`` with a study, a variant or a dataset renamed (references updated)."""
    config = copy.deepcopy(config)
    if where == "study":
        old = next(iter(config["studies"]))
        config["studies"] = {new if k == old else k: v for k, v in config["studies"].items()}
        for claim in config.get("claims", []):
            claim["study"] = new if claim["study"] == old else claim["study"]
    elif where == "variant":
        study = next(iter(config["studies"].values()))
        old = next(iter(study["variants"]))
        study["variants"] = {new if k == old else k: v for k, v in study["variants"].items()}
        for claim in config.get("claims", []):
            for key in ("variant", "compare_to"):
                if claim.get(key) == old:
                    claim[key] = new
    else:
        old = next(iter(config["datasets"]))
        config["datasets"] = {new if k == old else k: v for k, v in config["datasets"].items()}
        for study in config["studies"].values():
            study["dataset"] = new if study["dataset"] == old else study["dataset"]
    return config


@pytest.mark.parametrize("where", ["study", "variant", "dataset"])
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_unsafe_study_variant_and_dataset_names_are_rejected(where, name):
    with pytest.raises(ConfigError, match="invalid name") as exc:
        validate_config(renamed(TINY, where, name))
    assert exc.value.path[0] in ("studies", "datasets")


def test_the_wildcard_constraint_is_the_schema_name_pattern():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    safe = re.search(r'^SAFE_NAME = "(.*)"$', common, re.M).group(1)
    assert schema["$defs"]["name"]["pattern"] == f"^{safe}$"
    for wildcard in ("study", "pack", "dataset"):
        assert re.search(rf"^\s+{wildcard}=SAFE_NAME,$", common, re.M), wildcard
    assert re.search(r'^\s+chunk=r"\\d\+",$', common, re.M)




def snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
    return subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "config/tiny.yaml", *args],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)


def test_a_hostile_study_name_stops_the_workflow_before_any_job(tmp_path):
    work = make_workdir(tmp_path, renamed(TINY, "study", "$(touch pwned)"))
    proc = snakemake(work, "--cores", "1")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config error at studies: invalid name '$(touch pwned)'" in out and "Traceback" not in out
    assert not (work / "pwned").exists() and not (work / "results").exists()


# --------------------------------------------------------------------------- shell commands
# Placeholders a shell command may use unquoted, and why that is safe.
UNQUOTED_OK = {
    "threads": "an integer Snakemake computes",
    "wildcards.chunk": "constrained to digits (chunk=r'\\d+')",
    "params.seeds": "comma-separated integers from the validated config (train_seeds)",
    "params.max_replicas": "an integer train_max_replicas computes",
}


def shell_commands() -> dict[str, str]:
    """rule name -> the text of its shell command (string literals joined)."""
    commands = {}
    for path in RULES:
        for match in re.finditer(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", path.read_text(), re.M | re.S):
            shell = re.search(r"^    shell:\n((?:        .*\n?)+)", match.group(2), re.M)
            if shell:
                commands[match.group(1)] = "".join(ast.literal_eval(line.strip())
                                                   for line in shell.group(1).splitlines() if line.strip())
    return commands


def test_rules_quote_every_config_derived_value_in_shell_commands():
    commands = shell_commands()
    assert {"dataset", "train", "aggregate", "report"} <= set(commands)
    for rule, command in commands.items():
        for placeholder in re.findall(r"\{([^{}]+)\}", command):
            name, _, spec = placeholder.partition(":")
            assert spec == "q" or name in UNQUOTED_OK, f"rule {rule}: {{{placeholder}}} is not quoted (:q)"


def test_hostile_text_reaches_the_report_intact_and_never_the_shell(tmp_path):
    """A title and a claim text full of shell syntax reach ``reglab report`` unchanged, through the
    validated config file the workflow writes; no shell command carries config text."""
    config = copy.deepcopy(TINY)
    evil = "'; touch pwned; echo \"$(touch pwned2)\" `touch pwned3` {value} \\ %s"
    study = next(iter(config["studies"]))
    config["studies"][study]["title"] = evil
    config["claims"][0]["text"] = evil
    work = make_workdir(tmp_path, config)
    proc = snakemake(work, "-n", "-p", "--cores", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [line.removeprefix("Shell command: ") for line in proc.stdout.splitlines()
                if "python -m reglab" in line]
    assert commands and not [c for c in commands if "touch" in c]
    report = [shlex.split(c) for c in commands if "python -m reglab report" in c]
    assert len(report) == 1 and report[0][report[0].index("--config") + 1] == "results/config.json"
    proc = snakemake(work, "--cores", "1", "results/config.json")  # the rule that writes it (no training)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sent = json.loads((work / "results" / "config.json").read_text())["config"]
    assert sent["studies"][study]["title"] == evil and sent["claims"][0]["text"] == evil
    assert not list(work.glob("pwned*"))
