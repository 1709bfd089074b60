"""Property-based config validation (issue 7): mutate config/tiny.yaml (drop keys, change types, set
out-of-range numbers, rename to unsafe names, add unknown keys) and check that every invalid
result is rejected by ``validate_config`` with a ConfigError naming a key path that exists in the
mutated config, and that valid ones validate and plan (``snakemake -n`` in a temp copy).

The expected outcome of each mutation comes from a small, independent description of the config
format (required keys, bounds, references between sections) below, not from the JSON schema; where
that description has nothing to say the outcome may be either, but an error must still name a key
path.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reglab.config import ConfigError, config_schema, format_path, validate_config

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
VALID, INVALID, EITHER = "valid", "invalid", "either"

# keys that must be present, per kind of object (see kind_of); "layer": its one key is its type
REQUIRED = {
    "top": {"datasets", "studies"},
    "dataset": {"generator", "params", "n_train"},
    "params": {"n_samples", "noise", "random_state"},
    "study": {"title", "dataset", "training", "variants"},
    "training": {"optimizer", "epochs"},
    "optimizer": {"name"},
    "variant": {"layers"},
    "layer": None,  # every key
    "dense": {"units"},
    "dropout": {"rate"},
    "gaussian_noise": {"stddev"},
    "activation": {"name"},
    "batch_norm": set(),
    "training_override": set(),
    "gradient_noise": set(),
    # a grid without `layer` varies a training key, and `rate` is none: required here
    "grid": {"id", "base", "param", "values", "layer", "axes"},  # a grid has param, values, layer or axes
    "axis": {"name", "param", "values", "layer"},  # an axis of a grid over several options
    "claim": {"id", "text", "study", "variant", "metric", "direction"},
}
# (kind, key) -> (integer?, low, low inclusive?, high, high inclusive?, in-range changes keep it valid?)
BOUNDS = {
    ("top", "seeds"): (True, 1, True, None, None, True),
    ("top", "seeds_per_job"): (True, 1, True, None, None, True),
    ("top", "threads"): (True, 1, True, None, None, True),
    ("dataset", "n_train"): (True, 1, True, None, None, False),  # and < n_samples
    ("params", "n_samples"): (True, 2, True, None, None, False),
    ("params", "noise"): (False, 0, True, None, None, True),
    ("study", "seeds"): (True, 1, True, None, None, True),
    ("training", "epochs"): (True, 1, True, None, None, True),
    ("training", "batch_size"): (True, 1, True, None, None, True),
    ("training", "label_flip"): (False, 0, True, 1, True, True),
    ("training_override", "label_flip"): (False, 0, True, 1, True, True),
    ("optimizer", "lr"): (False, 0, False, None, None, True),
    ("optimizer", "momentum"): (False, 0, True, 1, False, True),
    ("dense", "units"): (True, 1, True, None, None, True),  # not the output layer's (see below)
    ("dense", "weight_noise"): (False, 0, True, None, None, True),
    ("dense", "max_norm"): (False, 0, False, None, None, True),
    ("dropout", "rate"): (False, 0, True, 1, False, True),
    ("gaussian_noise", "stddev"): (False, 0, True, None, None, True),
    ("gradient_noise", "eta"): (False, 0, True, None, None, True),
    ("gradient_noise", "gamma"): (False, 0, True, None, None, True),
    ("grid", "layer"): (True, 0, True, None, None, False),  # and names a layer of the base
    ("axis", "layer"): (True, 0, True, None, None, False),
}
NULLABLE = {("top", "seeds_per_job"), ("dense", "max_norm")}
UNSAFE_NAMES = ["../x", "$(rm -rf /)", "a b", "", ".hidden", "x/y", "-rf", "a;b", "`id`", "x\ny", "{value}",
                "a*", "é", "~home", "_x"]


# --------------------------------------------------------------------------- the config's structure
def walk(node, path=()):
    """Every (path, value) below ``node`` (not the root)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield (*path, key), value
        yield from walk(value, (*path, key))


def get(config, path):
    for part in path:
        config = config[part]
    return config


def kind_of(path: tuple) -> str | None:
    """What kind of object ``path`` (a path to a mapping) is, in the config's format."""
    n = len(path)
    if n == 0:
        return "top"
    if path in (("datasets",), ("studies",)) or (n == 3 and path[0] == "studies" and path[2] == "variants"):
        return "entries"  # named datasets, studies, variants
    if path[0] == "datasets":
        return {2: "dataset", 3: "params" if n == 3 and path[2] == "params" else None}.get(n)
    if path[0] == "claims" and n == 2:
        return "claim"
    if path[0] != "studies" or n < 2:
        return None
    rest = path[2:]
    if not rest:
        return "study"
    if rest[0] == "training":
        return {1: "training", 2: rest[-1] if rest[-1] in ("optimizer", "gradient_noise") else None}.get(len(rest))
    if rest[0] == "grids" and len(rest) == 2:
        return "grid"
    if rest[0] == "grids" and len(rest) == 4 and rest[2] == "axes":
        return "axis"
    if rest[0] == "variants" and len(rest) >= 2:
        inner = rest[2:]
        if inner and inner[0] == "layers":  # {layers, training} form
            inner = inner[1:]
        elif inner and inner[0] == "training":
            return {1: "training_override", 2: "optimizer" if inner[-1] == "optimizer" else "gradient_noise"
                    if inner[-1] == "gradient_noise" else None}.get(len(inner))
        if not inner:
            return "variant" if isinstance(get(BASE, path), dict) else None
        if len(inner) == 1 and isinstance(inner[0], int):
            return "layer"
        if len(inner) == 2 and isinstance(inner[0], int):
            return inner[1]  # the layer's options: dense, dropout, ...
    return None


def is_output_layer(path: tuple) -> bool:
    """Whether ``path`` lies in the last layer of a variant (its head: units and activation matter)."""
    for i, part in enumerate(path):
        if isinstance(part, int) and i and path[i - 1] != "values" and path[0] == "studies":
            layers = get(BASE, path[:i])
            return isinstance(layers, list) and part == len(layers) - 1 and path[i - 1] != "grids"
    return False


def references(config: dict) -> dict[tuple, set]:
    """What refers to each dataset, study and variant: (kind, name[, study]) -> referring paths."""
    refs: dict[tuple, set] = {}
    for name, study in config["studies"].items():
        refs.setdefault(("dataset", study["dataset"]), set()).add(("studies", name, "dataset"))
        for g, grid in enumerate(study.get("grids", [])):
            for key in ("base", "baseline"):
                if key in grid:
                    refs.setdefault(("variant", grid[key], name), set()).add(("studies", name, "grids", g, key))
    for i, claim in enumerate(config.get("claims", [])):
        refs.setdefault(("study", claim["study"]), set()).add(("claims", i, "study"))
        for key in ("variant", "compare_to"):
            if key in claim:
                refs.setdefault(("variant", claim[key], claim["study"]), set()).add(("claims", i, key))
    return refs


def entry_is_referenced(path: tuple) -> bool:
    """Whether the dataset, study or variant at ``path`` is named elsewhere in the config."""
    refs = references(BASE)
    if len(path) == 2 and path[0] == "datasets":
        return ("dataset", path[1]) in refs
    if len(path) == 2 and path[0] == "studies":
        return ("study", path[1]) in refs
    return ("variant", path[3], path[1]) in refs


def is_entry(path: tuple) -> bool:
    """A named entry: a dataset, a study or a variant."""
    return (len(path) == 2 and path[0] in ("datasets", "studies")) or (
        len(path) == 4 and path[0] == "studies" and path[2] == "variants")


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "dict"}[type(value)]


REPLACEMENTS = {"null": None, "bool": True, "number": 7, "string": "x", "list": ["x"], "dict": {"x": 1}}
ALL_PATHS = [path for path, _ in walk(BASE)]
DICT_PATHS = [()] + [path for path, value in walk(BASE) if isinstance(value, dict)]
KEY_PATHS = [path for path in ALL_PATHS if isinstance(get(BASE, path[:-1]), dict)]
BOUNDED = [path for path in KEY_PATHS if (kind_of(path[:-1]), path[-1]) in BOUNDS
           and json_type(get(BASE, path)) == "number"]
ENTRIES = [path for path in KEY_PATHS if is_entry(path)]
NAME_VALUES = [path for path in KEY_PATHS if (kind_of(path[:-1]), path[-1]) in {
    ("study", "dataset"), ("claim", "study"), ("claim", "variant"), ("claim", "compare_to"), ("claim", "id"),
    ("grid", "id"), ("grid", "base"), ("grid", "baseline")}]


def _schema_keys(node) -> set:
    keys = set()
    if isinstance(node, dict):
        keys |= set(node.get("properties", {}))
        for value in node.values():
            keys |= _schema_keys(value)
    elif isinstance(node, list):
        for value in node:
            keys |= _schema_keys(value)
    return keys


KNOWN_KEYS = _schema_keys(config_schema())  # the shipped schema with the layer registry's options


# --------------------------------------------------------------------------- mutations
def drop_outcome(path: tuple) -> str:
    *parent, key = path
    if is_entry(path):
        siblings = get(BASE, path[:-1])
        return INVALID if entry_is_referenced(path) or len(siblings) == 1 else VALID
    kind = kind_of(tuple(parent))
    if kind not in REQUIRED:
        return EITHER
    if kind == "dense" and key == "activation" and is_output_layer(path):
        return EITHER  # the head: whether a linear output is refused is the shape check's business
    required = REQUIRED[kind]
    return INVALID if required is None or key in required else VALID


def rename(config: dict, path: tuple, new: str) -> None:
    """Rename the mapping key at ``path`` to ``new``, keeping its place."""
    parent = get(config, path[:-1])
    items = list(parent.items())
    parent.clear()
    parent.update((new if k == path[-1] else k, v) for k, v in items)


@st.composite
def mutations(draw, only_valid: bool = False):
    """(description, mutated config, expected outcome)."""
    config = copy.deepcopy(BASE)
    kinds = ["drop", "in_range", "safe_rename", "nullify"] if only_valid else [
        "drop", "retype", "out_of_range", "unsafe_rename", "unsafe_reference", "unknown_key", "in_range"]
    kind = draw(st.sampled_from(kinds))
    if kind == "drop":
        candidates = [p for p in KEY_PATHS if not only_valid or drop_outcome(p) == VALID]
        path = draw(st.sampled_from(candidates))
        del get(config, path[:-1])[path[-1]]
        return f"drop {format_path(path)}", config, drop_outcome(path)
    if kind == "nullify":
        path = draw(st.sampled_from([p for p in BOUNDED if (kind_of(p[:-1]), p[-1]) in NULLABLE]))
        get(config, path[:-1])[path[-1]] = None
        return f"{format_path(path)} = null", config, VALID
    if kind == "retype":
        path = draw(st.sampled_from(ALL_PATHS))
        old = json_type(get(BASE, path))
        new = draw(st.sampled_from(sorted(set(REPLACEMENTS) - {old})))
        get(config, path[:-1])[path[-1]] = copy.deepcopy(REPLACEMENTS[new])
        nullable = new == "null" and path in KEY_PATHS and (kind_of(path[:-1]), path[-1]) in NULLABLE
        return f"{format_path(path)} = {REPLACEMENTS[new]!r}", config, VALID if nullable else INVALID
    if kind in ("out_of_range", "in_range"):
        candidates = BOUNDED
        if kind == "in_range":
            candidates = [p for p in BOUNDED if BOUNDS[(kind_of(p[:-1]), p[-1])][5]
                          and not (p[-1] == "units" and is_output_layer(p))]
        path = draw(st.sampled_from(candidates))
        integer, lo, lo_in, hi, hi_in, _ = BOUNDS[(kind_of(path[:-1]), path[-1])]
        if kind == "in_range":
            top = hi if hi is not None else lo + 20
            if integer:
                value = draw(st.integers(lo, top))
            else:
                value = draw(st.floats(lo, top, exclude_min=not lo_in, exclude_max=not hi_in or hi is None))
            outcome = VALID
        else:
            step = draw(st.sampled_from([1, 3, 1000] if integer else [1e-9, 0.5, 1, 1e6]))
            below = [lo - step] + ([] if lo_in else [lo])
            above = [] if hi is None else [hi + step] + ([] if hi_in else [hi])
            value = draw(st.sampled_from(below + above))
            outcome = INVALID
        get(config, path[:-1])[path[-1]] = value
        return f"{format_path(path)} = {value!r}", config, outcome
    if kind in ("unsafe_rename", "safe_rename", "unsafe_reference"):
        if kind == "safe_rename":
            new = draw(st.from_regex(r"zz[a-z0-9_]{0,6}", fullmatch=True))
            candidates = [p for p in ENTRIES if not entry_is_referenced(p)]
        else:
            new = draw(st.one_of(st.sampled_from(UNSAFE_NAMES),
                                 st.text(max_size=6).filter(lambda t: not SAFE_NAME.fullmatch(t))))
            candidates = ENTRIES if kind == "unsafe_rename" else NAME_VALUES
        path = draw(st.sampled_from(candidates))
        if kind == "unsafe_reference":
            get(config, path[:-1])[path[-1]] = new
        else:
            rename(config, path, new)
        return f"rename {format_path(path)} to {new!r}", config, VALID if kind == "safe_rename" else INVALID
    # unknown_key
    path = draw(st.sampled_from(DICT_PATHS))
    key = draw(st.from_regex(r"[a-z][a-z_]{2,9}", fullmatch=True).filter(lambda k: k not in KNOWN_KEYS))
    target = get(config, path)
    if key in target:
        return "no change", config, VALID
    target[key] = 1
    return f"add {format_path((*path, key))}: 1", config, INVALID


# --------------------------------------------------------------------------- checks
def resolves(config, path: tuple) -> bool:
    """Whether ``path`` leads somewhere in ``config``; a variant written as {layers, training} may be
    addressed as its list of layers (validation normalises variants to lists of layers)."""
    node = config
    for part in path:
        if isinstance(node, dict) and part not in node and isinstance(part, int) and "layers" in node:
            node = node["layers"]
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int) \
                and 0 <= part < len(node):
            node = node[part]
        else:
            return False
    return True


def check(description: str, config: dict, outcome: str) -> bool:
    """Validate one mutated config; return whether it was accepted."""
    try:
        validate_config(config)
    except ConfigError as exc:
        assert outcome != VALID, f"{description}: a valid config was rejected: {exc}"
        message = str(exc)
        assert message.startswith("config error"), message
        assert "Traceback" not in message and "\n" not in message.split(": ", 1)[0]
        if exc.path:
            assert f" at {format_path(exc.path)}: " in message, message
            assert resolves(config, exc.path), f"{description}: {message}: the key path is not in the config"
        else:  # a top-level problem: the message names the top-level key
            assert re.search(r"'[^']*'", message), f"{description}: {message} names no key"
        return False
    assert outcome != INVALID, f"{description}: an invalid config was accepted"
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_every_mutated_config_is_rejected_with_a_key_path_or_accepted(mutation):
    check(*mutation)


@pytest.mark.parametrize("name", ["../x", "$(rm -rf /)", "a b", "", "x/y"])
def test_unsafe_names_are_rejected_wherever_they_appear(name):
    for path in ENTRIES:
        config = copy.deepcopy(BASE)
        rename(config, path, name)
        with pytest.raises(ConfigError, match="invalid name") as exc:
            validate_config(config)
        assert exc.value.path == path[:-1]
    for path in NAME_VALUES:
        config = copy.deepcopy(BASE)
        get(config, path[:-1])[path[-1]] = name
        with pytest.raises(ConfigError, match="does not match") as exc:
            validate_config(config)
        assert exc.value.path == path


def test_the_mutations_cover_every_kind_of_change():
    """The description above matches config/tiny.yaml: it finds things to mutate of every kind."""
    assert len(BOUNDED) >= 15 and len(ENTRIES) >= 8 and len(NAME_VALUES) >= 8
    assert {drop_outcome(p) for p in KEY_PATHS} >= {VALID, INVALID}
    assert all(kind_of(p) is not None for p in DICT_PATHS), [p for p in DICT_PATHS if kind_of(p) is None]


def snakemake_plan(config: dict) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(REPO / "Snakefile", work)
        for sub in ("workflow", "config", "profiles"):
            shutil.copytree(REPO / sub, work / sub)
        (work / "config" / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]}
        return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile",
                               "config/tiny.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=300)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations(only_valid=True))
def test_valid_mutations_plan(mutation):
    description, config, outcome = mutation
    assert check(description, config, outcome)
    proc = snakemake_plan(config)
    assert proc.returncode == 0, f"{description}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "rule train:" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_an_error_in_a_variant_written_with_layers_names_where_it_is_written():
    config = copy.deepcopy(BASE)
    variant = next(name for name, v in config["studies"]["dropout"]["variants"].items() if isinstance(v, dict))
    layers = config["studies"]["dropout"]["variants"][variant]["layers"]
    layers[-1]["dense"]["activation"] = "relu"
    with pytest.raises(ConfigError) as exc:
        validate_config(config)
    assert exc.value.path == ("studies", "dropout", "variants", variant, "layers", len(layers) - 1)
