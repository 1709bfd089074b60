"""Load and validate the workflow config; expand it into variant specs and training jobs.

The JSON schema (`config_schema()`: src/reglab/schemas/config.schema.yaml, shipped as package data,
with each layer type's options from the layer registry, reglab.layerkinds) checks each value and
supplies defaults; `validate_config` adds the checks a schema cannot express (cross-references
between sections).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import re
import reprlib
from importlib import resources
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from reglab.contract import job_dir
from reglab.layerkinds import LAYER_KINDS
from reglab.replicas import SOURCES
from reglab.shapes import BUILTIN_GENERATORS, ShapeError, dataset_input, head_error, output_shape

LAYER_TYPES = tuple(LAYER_KINDS)


class ConfigError(ValueError):
    """An invalid config: `config error [in FILE] [at KEY.PATH[i]]: what is wrong`.

    `source` is the config file's name; None or "config" (no file known) leaves out the `in FILE` part.
    """

    def __init__(self, message: str, path=(), source: str | None = None):
        self.message, self.path, self.source = message, tuple(path), source
        where = f" in {source}" if source not in (None, "config") else ""
        where += f" at {format_path(path)}" if path else ""
        super().__init__(f"config error{where}: {message}")


def format_path(path) -> str:
    """Key path as text: dots between keys, [i] for list indices (`studies.s.variants.v[1].dense`)."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def load_config(path) -> dict:
    """Read a YAML config file into a dict (not yet validated)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except OSError as e:
        raise ConfigError(f"cannot read file ({e.strerror})", source=str(path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"invalid YAML{where}: {problem}", source=str(path)) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"the top level must be a mapping of keys, got {got}", source=str(path))
    return data


@functools.cache
def _schema() -> dict:
    """The config schema, read once (shared: never modify it; `config_schema()` gives a copy)."""
    text = (resources.files("reglab") / "schemas" / "config.schema.yaml").read_text(encoding="utf-8")
    schema = yaml.safe_load(text)
    schema["$defs"]["layer"]["properties"] = {name: copy.deepcopy(kind.options) for name, kind in LAYER_KINDS.items()}
    return schema


def config_schema() -> dict:
    """The JSON schema of a config: reglab/schemas/config.schema.yaml (package data) with
    `$defs.layer.properties` filled in from the layer registry's options, one entry per layer type."""
    return copy.deepcopy(_schema())


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(_schema())


def validate_config(config: dict, source: str = "config") -> dict:
    """Return a validated copy of `config` with every schema default (and each study's seeds) filled in.

    Raises ConfigError; `source` (the config file's name, when known) is named in its message.
    """
    schema, validator = _schema(), _validator()
    _raise_first_schema_error(validator, config, source)
    config = copy.deepcopy(config)
    origins = _expand_grids(config, schema, source)
    _raise_first_schema_error(validator, config, source, origins)
    _fill_defaults(config, schema, schema, validator)
    for study in config["studies"].values():
        study.setdefault("seeds", config["seeds"])
        _split_variant_training(study)
    _expand_variance_sources(config, source)
    for path, message in _cross_reference_errors(config):
        raise ConfigError(message, path, source)  # the first problem found
    return config


def _raise_first_schema_error(validator, config: dict, source: str, origins: dict | None = None) -> None:
    """Raise ConfigError for the most relevant schema error, if any.

    ``origins`` maps grid-generated variants ``(study, variant)`` to the key path of the grid value
    they came from, so that an error inside one is reported where the user wrote it.
    """
    error = best_match(validator.iter_errors(config))
    if error is None:
        return
    while error.parent is not None:  # best_match descends into oneOf branches; _describe picks one itself
        error = error.parent
    path, message = _describe(error)
    if origins and len(path) >= 4 and path[0] == "studies" and (path[1], path[3]) in origins:
        grid_path, value = origins[(path[1], path[3])]
        message = f"grid value {value!r} gives an invalid variant {path[3]!r}: {message} (at {format_path(path[4:])})"
        path = grid_path
    raise ConfigError(message, path, source)


def _expand_grids(config: dict, schema: dict, source: str) -> dict:
    """Add each study's grid points as variants, in place; return their origins (see above).

    A grid varies options of a base variant. Its one-parameter form varies one option (``layer``
    index, or ``layers`` indices tied to one value, and ``param`` path inside the layer's options, or
    a ``param`` of its training) over ``values``; each point is named by the ``name`` template
    (``{id}``, ``{value}``). Its multi-axis form lists ``axes``, each such an option with its own
    ``name`` and ``values``; its points are every combination of the axes' values (the first axis
    varying slowest), named by the ``name`` template (``{id}``, ``{<axis name>}``; by default
    ``{id}_<axis><value>_...``), and their values per axis are recorded in ``points``. Both forms
    record the point names in ``variants``. (snakemake.utils.Paramspace names points ``key~value``
    over DataFrame columns and knows no base variant or nested layer option, so the expansion is
    done here.) Every problem raises one ConfigError naming the key path.
    """
    origins = {}
    name_pattern = re.compile(schema["$defs"]["name"]["pattern"])
    for study_name, study in config["studies"].items():
        variants = study["variants"]
        for g, grid in enumerate(study.get("grids", [])):
            where = ["studies", study_name, "grids", g]
            for key in ("base", "baseline"):
                if key in grid and grid[key] not in variants:
                    raise ConfigError(f"unknown {key} variant {grid[key]!r} (defined: {', '.join(variants)})",
                                      [*where, key], source)
            multi = "axes" in grid
            axes = _grid_axes(grid, where, source)
            base = _variant_parts(study, grid["base"])
            targets = []
            for axis, path in axes:
                targets.append(_check_grid_axis(base, axis, path, grid["base"], schema, source))
            if multi:
                _check_axes_together(axes, targets, source)
                for axis, path in axes:
                    _check_axis_values(study, base, axis, path, schema, source)
            template = _grid_name_template(grid, axes, where, source)
            names, points = [], []
            combos = itertools.product(*(list(enumerate(axis["values"])) for axis, _ in axes))
            for combo in combos:
                values = {axis["name"]: value for (axis, _), (_, value) in zip(axes, combo)}
                name = _grid_point_name(template, grid["id"], values)
                value_path = [*axes[0][1], "values", combo[0][0]] if not multi else None
                if not name_pattern.fullmatch(name):
                    raise ConfigError(f"grid point name {name!r} is not a valid name: names must match "
                                      f"{name_pattern.pattern} (a letter or digit, then letters, digits, '_', '.' "
                                      "or '-')", [*where, "name"], source)
                point = _grid_point(study, base, [(axis, value) for (axis, _), (_, value) in zip(axes, combo)])
                what = f"grid point {name!r}" + (f" ({_point_text(values)})" if multi else "")
                clash_path = value_path or [*where, "name" if "name" in grid else "id"]
                if name in names:
                    raise ConfigError(f"{what} has the same name as another point of this grid "
                                      f"({_point_text(points[names.index(name)])}); put every axis in the "
                                      "name template", clash_path, source)
                if name in variants:  # written explicitly, or a point of an earlier grid: must be the same
                    if _variant_parts(study, name) != point:
                        raise ConfigError(f"{what} clashes with a different variant of that name", clash_path, source)
                else:
                    layers, training = point
                    variants[name] = {"layers": layers, "training": training} if training else layers
                names.append(name)
                points.append(values)
                origins[(study_name, name)] = (value_path, combo[0][1]) if not multi else ([*where, "axes"], values)
            grid["variants"] = names
            if multi:
                grid["name"], grid["points"] = template, points
    return origins


#: the keys of a grid's one-parameter form (its one axis, written in the grid itself)
ONE_AXIS_KEYS = ("layer", "layers", "param", "values")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _grid_axes(grid: dict, where: list, source: str) -> list[tuple[dict, list]]:
    """The grid's axes as (axis, key path of the axis); the one-parameter form is one axis named
    ``value`` (its keys in the grid itself)."""
    if "axes" in grid:
        found = [key for key in ONE_AXIS_KEYS if key in grid]
        if found:
            raise ConfigError(f"a grid varies one parameter (param, values) or several (axes), not both; it has "
                              f"axes and {', '.join(found)}", [*where, "axes"], source)
        axes = [(axis, [*where, "axes", k]) for k, axis in enumerate(grid["axes"])]
        seen = {}
        for axis, path in axes:
            if axis["name"] in seen:
                raise ConfigError(f"duplicate axis name {axis['name']!r} (also axes[{seen[axis['name']]}])",
                                  [*path, "name"], source)
            if axis["name"] == "id":
                raise ConfigError("the axis name 'id' is taken: {id} stands for the grid's id in the name template",
                                  [*path, "name"], source)
            seen[axis["name"]] = path[-1]
        return axes
    missing = [key for key in ("param", "values") if key not in grid]
    if missing:
        raise ConfigError(f"a grid needs param and values (one parameter) or axes (several); missing "
                          f"{' and '.join(map(repr, missing))}", where, source)
    return [({"name": "value", **{key: grid[key] for key in ONE_AXIS_KEYS if key in grid}}, where)]


def _axis_layers(axis: dict) -> list[int] | None:
    """The layer indices an axis sets (several when tied), or None for a training key."""
    if "layers" in axis:
        return list(axis["layers"])
    return [axis["layer"]] if "layer" in axis else None


def _check_grid_axis(base: tuple[list, dict], axis: dict, path: list, base_name: str, schema: dict,
                     source: str) -> tuple[list | None, list[str]]:
    """Check that the base variant has the option an axis varies and that its values are distinct;
    return what it sets: (layer indices or None for training, the param's keys)."""
    layers, _ = base
    keys = axis["param"].split(".")
    if "layer" in axis and "layers" in axis:
        raise ConfigError("an axis sets layer (one layer) or layers (several, tied), not both",
                          [*path, "layers"], source)
    indices = _axis_layers(axis)
    if indices is None:
        allowed = schema["$defs"]["training_override"]["properties"]
        if keys[0] not in allowed:
            raise ConfigError(f"training has no parameter {keys[0]!r} (has: {', '.join(allowed) or 'none'})",
                              [*path, "param"], source)
    for i, index in enumerate(indices or []):
        at = [*path, "layers", i] if "layers" in axis else [*path, "layer"]
        if index in indices[:i]:
            raise ConfigError(f"layer {index} is listed twice (also layers[{indices.index(index)}])", at, source)
        if index >= len(layers):
            raise ConfigError(f"base variant {base_name!r} has {len(layers)} layers; there is no layer {index}",
                              at, source)
        (kind, _), = layers[index].items()
        allowed = schema["$defs"]["layer"]["properties"][kind].get("properties", {})
        if keys[0] not in allowed:
            raise ConfigError(f"layer {index} ({kind}) of variant {base_name!r} has no parameter {keys[0]!r} "
                              f"(has: {', '.join(allowed) or 'none'})", [*path, "param"], source)
    seen = []
    for j, value in enumerate(axis["values"]):
        if value in seen:
            raise ConfigError(f"duplicate value {value!r} (also values[{seen.index(value)}])",
                              [*path, "values", j], source)
        seen.append(value)
    return indices, keys


def _check_axes_together(axes: list[tuple[dict, list]], targets: list, source: str) -> None:
    """No two axes may set the same option (the same layer and param, or one param inside the other)."""
    for k, (indices, keys) in enumerate(targets):
        for j in range(k):
            other_indices, other_keys = targets[j]
            same_place = (indices is None and other_indices is None) or bool(
                set(indices or []) & set(other_indices or []))
            n = min(len(keys), len(other_keys))
            if same_place and keys[:n] == other_keys[:n]:
                axis, path = axes[k]
                raise ConfigError(f"axis {axis['name']!r} varies the same option as axis {axes[j][0]['name']!r} "
                                  f"({axes[j][0]['param']})", [*path, "param"], source)


@functools.cache
def _variant_validator() -> Draft202012Validator:
    """A validator of one variant (``$defs.variant`` of the config schema)."""
    schema = _schema()
    return Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/variant"})


def _check_axis_values(study: dict, base: tuple[list, dict], axis: dict, path: list, schema: dict,
                       source: str) -> None:
    """Each value of an axis, set alone on the base variant, gives a valid variant (else a ConfigError at
    the value, not at the combinations it is part of)."""
    for j, value in enumerate(axis["values"]):
        layers, training = _grid_point(study, base, [(axis, value)])
        variant = {"layers": layers, "training": training} if training else layers
        error = best_match(_variant_validator().iter_errors(variant))
        if error is not None:
            while error.parent is not None:
                error = error.parent
            inner, message = _describe(error)
            raise ConfigError(f"axis {axis['name']!r} value {value!r} gives an invalid variant: {message} "
                              f"(at {format_path(inner)})", [*path, "values", j], source)


def _grid_name_template(grid: dict, axes: list[tuple[dict, list]], where: list, source: str) -> str:
    """The grid's name template, checked: ``{id}`` and one placeholder per axis (``{value}`` for the
    one-parameter form), each axis's at least once. The multi-axis default is ``{id}_<axis>{<axis>}_...``."""
    names = [axis["name"] for axis, _ in axes]
    if "name" in grid:
        template = grid["name"]
    elif "axes" in grid:
        template = "{id}_" + "_".join(f"{n}{{{n}}}" for n in names)
    else:
        template = "{id}_{value}"
    used = _PLACEHOLDER.findall(template)
    allowed = ["id", *names]
    for placeholder in used:
        if placeholder not in allowed:
            raise ConfigError(f"unknown placeholder {{{placeholder}}} in the name template (allowed: "
                              f"{', '.join('{' + a + '}' for a in allowed)})", [*where, "name"], source)
    for n in names:
        if n not in used:
            raise ConfigError(f"the name template {template!r} lacks {{{n}}}: each point's name must show its "
                              f"value{'s' if len(names) > 1 else ''}", [*where, "name"], source)
    return template


def _grid_point_name(template: str, grid_id: str, values: dict) -> str:
    """A grid point's variant name: the template with ``{id}`` and each axis's value filled in."""
    fill = {"id": grid_id, **{name: str(value) for name, value in values.items()}}
    return _PLACEHOLDER.sub(lambda m: fill[m.group(1)], template)


def _point_text(values: dict) -> str:
    """A grid point's values as 'input = 0.01, hidden = 0.05'."""
    return ", ".join(f"{name} = {value!r}" for name, value in values.items())


def _variant_parts(study: dict, name: str) -> tuple[list, dict]:
    """A variant's layers and training overrides, whichever form it is written in."""
    variant = study["variants"][name]
    if isinstance(variant, dict):
        return variant["layers"], variant.get("training", {})
    return variant, study.get("variant_training", {}).get(name, {})


def _grid_point(study: dict, base: tuple[list, dict], settings: list[tuple[dict, object]]):
    """The base variant's (layers, training overrides) with each axis's option set to its value
    (``settings``: (axis, value) pairs; an axis with ``layers`` sets the value on each of them).

    A training option inside the optimizer starts from the variant's (or the study's) optimizer,
    since a per-variant optimizer replaces the study's whole. The axes are checked already
    (:func:`_check_grid_axis`).
    """
    layers, training = copy.deepcopy(base)
    for axis, value in settings:
        keys = axis["param"].split(".")
        indices = _axis_layers(axis)
        if indices is None:
            if keys[0] == "optimizer" and len(keys) > 1 and "optimizer" not in training:
                training["optimizer"] = copy.deepcopy(study["training"]["optimizer"])
            targets = [training]
        else:
            targets = [next(iter(layers[i].values())) for i in indices]
        for target in targets:
            for key in keys[:-1]:
                target = target.setdefault(key, {})
            target[keys[-1]] = value
    return layers, training


def _split_variant_training(study: dict) -> None:
    """Normalise variants to lists of layers; per-variant training overrides go to `variant_training`."""
    overrides = study.setdefault("variant_training", {})
    for name, variant in study["variants"].items():
        if isinstance(variant, dict):
            study["variants"][name] = variant["layers"]
            if variant.get("training"):
                overrides[name] = variant["training"]


def variance_run_name(variant: str, source: str) -> str:
    """The name of the decomposition run of ``variant`` that varies ``source`` (see
    :func:`_expand_variance_sources`): ``dropout_0.4--init``."""
    return f"{variant}--{source}"


def variance_pack(variant: str) -> str:
    """The pack (one training job per chunk of seeds) of a variant's decomposition runs."""
    return f"{variant}--sources"


def grid_only_variants(study: dict) -> set[str]:
    """The variants of a study that exist only as grid points: one of some grid's ``variants`` and
    neither the ``base`` nor the ``baseline`` of any grid (reglab.report draws them apart)."""
    grids = study.get("grids", [])
    kept = {g.get(k) for g in grids for k in ("base", "baseline")}
    return {v for g in grids for v in g.get("variants", []) if v not in kept}


def _expand_variance_sources(config: dict, source: str) -> None:
    """Add each study's variance decomposition runs as variants, in place (after the grids, with
    variants normalised by :func:`_split_variant_training`), recorded in ``variance_runs``.

    ``variance_sources`` (a list of :data:`reglab.replicas.SOURCES`, or true for all of them) asks,
    for every variant but grid-only points and earlier decomposition runs, one run per source plus
    one of every source at once (``all``), each a copy of the variant named
    :func:`variance_run_name`; :func:`variant_spec` gives it ``vary``. Validating a validated config
    again finds the same runs (``variance_runs``) and changes nothing. A run's name, or its pack's
    (:func:`variance_pack`), taken by another variant or grid raises one ConfigError.
    """
    for study_name, study in config["studies"].items():
        where = ["studies", study_name]
        asked = study.get("variance_sources", False)
        sources = list(SOURCES) if asked is True else [s for s in SOURCES if s in (asked or [])]
        existing = study.get("variance_runs", {})
        variants, overrides = study["variants"], study["variant_training"]
        grid_only = grid_only_variants(study)
        bases = [v for v in variants if v not in existing and v not in grid_only]
        expected = {variance_run_name(base, s): {"variant": base, "source": s}
                    for base in bases for s in ([*sources, "all"] if sources else [])}
        if existing and existing != expected:
            raise ConfigError("variance_runs is filled in by validation from variance_sources; leave it out",
                              [*where, "variance_runs"], source)
        taken = set(variants) | {g["id"] for g in study.get("grids", [])}
        for base in dict.fromkeys(run["variant"] for run in expected.values()):
            if variance_pack(base) in taken:
                raise ConfigError(f"the training job of variant {base!r}'s variance decomposition would be named "
                                  f"{variance_pack(base)!r}, which a variant or grid already has: rename it",
                                  [*where, "variance_sources"], source)
        for name, run in expected.items():
            base = run["variant"]
            if name in variants and name not in existing:
                raise ConfigError(f"variant {base!r}'s variance decomposition run {name!r} (varying {run['source']}) "
                                  "has the name of another variant: rename that one", [*where, "variance_sources"],
                                  source)
            variants[name] = copy.deepcopy(variants[base])
            if base in overrides:
                overrides[name] = copy.deepcopy(overrides[base])
            else:
                overrides.pop(name, None)
        if expected:
            study["variance_runs"] = expected


def _describe(error: ValidationError) -> tuple[list, str]:
    """Key path and a readable message for one schema error."""
    path, schema, instance = list(error.absolute_path), error.schema, error.instance
    kind = error.validator
    if "propertyNames" in error.relative_schema_path:
        pattern = schema.get("pattern", "^[A-Za-z0-9][A-Za-z0-9_.-]*$")
        return path, (f"invalid name {instance!r}: names must match {pattern} "
                      "(a letter or digit, then letters, digits, '_', '.' or '-')")
    if kind == "additionalProperties" and schema.get("additionalProperties") is False:
        allowed = list(schema.get("properties", {}))
        unknown = [key for key in instance if key not in allowed]
        what = "layer" if schema.get("title") == "layer" else "key"
        return path, f"unknown {what} {unknown[0]!r} (allowed: {', '.join(allowed)})"
    if kind in ("minProperties", "maxProperties") and schema.get("title") == "layer":
        got = ", ".join(map(repr, instance)) or "none"
        return path, f"a layer must have exactly one key, its type (one of: {', '.join(LAYER_TYPES)}); got {got}"
    if kind in ("minProperties", "minItems") and error.validator_value == 1:
        return path, "must not be empty"
    if kind == "oneOf":
        return _describe_one_of(error)
    if kind == "type" and isinstance(instance, str) and "e" in instance.lower() and _is_number(instance):
        return path, (f"{instance!r} is a string, not a number: YAML reads exponents without a "
                      "decimal point as text (write e.g. 1.0e-7)")
    message = error.message
    if kind == "type":
        message = f"{reprlib.repr(instance)} is not of type {error.validator_value!r}"
    return path, message


def _describe_one_of(error: ValidationError) -> tuple[list, str]:
    """Explain a oneOf failure: the branches are told apart by their `name` constant (the optimizer)
    or by their type (a variant: a list of layers or a mapping)."""
    keys = [branch["required"][0] if "title" in branch and branch.get("required") else None
            for branch in error.validator_value]
    if all(keys) and isinstance(error.instance, dict):  # told apart by the key each requires (a dataset)
        return _describe_keyed_one_of(error, keys)
    names = [branch.get("properties", {}).get("name", {}).get("const") for branch in error.validator_value]
    if not any(names):
        wrong_type = {e.relative_schema_path[0] for e in error.context if e.validator == "type" and not e.path}
        errors = [e for e in error.context if e.relative_schema_path[0] not in wrong_type]
        if not errors:
            return list(error.absolute_path), f"{reprlib.repr(error.instance)} is neither a list of layers nor a mapping"
        return _describe(best_match(errors))
    name = error.instance.get("name") if isinstance(error.instance, dict) else None
    if name in names:
        index = names.index(name)
        branch_errors = [e for e in error.context if e.relative_schema_path[0] == index]
        return _describe(best_match(branch_errors))
    what = error.schema.get("title", "name")
    return list(error.absolute_path), f"unknown {what} {name!r} (allowed: {', '.join(map(str, names))})"


def _describe_keyed_one_of(error: ValidationError, keys: list[str]) -> tuple[list, str]:
    """Explain a oneOf failure whose branches (each with a `title`) are told apart by the first key
    each requires: a dataset's `generator` or `file`."""
    present = [key for key in keys if key in error.instance]
    if len(present) == 1:
        index = keys.index(present[0])
        return _describe(best_match([e for e in error.context if e.relative_schema_path[0] == index]))
    what = error.schema.get("title", "entry")
    if present:
        return list(error.absolute_path), f"a {what} has {' or '.join(present)}, not both"
    return list(error.absolute_path), f"a {what} needs {' or '.join(keys)}"


def _is_number(text: str) -> bool:
    """Whether a string parses as a float (so a YAML number was read as text)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _resolve(schema: dict, root: dict) -> dict:
    """Follow a local `$ref` (`#/$defs/...`) in `schema`; other schemas are returned as they are."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    target = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return _resolve(target, root)


def _fill_defaults(instance, schema: dict, root: dict, validator: Draft202012Validator) -> None:
    """Insert schema `default`s for missing keys, in place, everywhere in an already valid instance."""
    schema = _resolve(schema, root)
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        for key, sub in properties.items():
            sub = _resolve(sub, root)
            if key not in instance and "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            if key in instance:
                _fill_defaults(instance[key], sub, root, validator)
        if isinstance(schema.get("additionalProperties"), dict):
            for key in instance.keys() - properties.keys():
                _fill_defaults(instance[key], schema["additionalProperties"], root, validator)
    if isinstance(instance, list) and "items" in schema:
        for item in instance:
            _fill_defaults(item, schema["items"], root, validator)
    for branch in schema.get("oneOf", []):
        if validator.evolve(schema=branch).is_valid(instance):
            _fill_defaults(instance, branch, root, validator)
    for part in schema.get("allOf", []):
        if "if" in part and validator.evolve(schema=part["if"]).is_valid(instance):
            _fill_defaults(instance, part.get("then", {}), root, validator)


def _cross_reference_errors(config: dict):
    """Yield (key path, message) for what the schema cannot check: references between sections."""
    datasets, studies = config["datasets"], config["studies"]
    for name, dataset in datasets.items():
        yield from _dataset_errors(name, dataset)
    for name, study in studies.items():
        if study["dataset"] not in datasets:
            yield (["studies", name, "dataset"],
                   f"unknown dataset {study['dataset']!r} (defined: {', '.join(datasets)})")
        if study["dataset"] not in datasets:
            continue
        shape, n_classes = dataset_input(datasets[study["dataset"]])
        for variant, layers in study["variants"].items():
            path = ["studies", name, "variants", variant]
            if variant in study["variant_training"]:  # written as {layers, training}
                path.append("layers")
            yield from _shape_errors(path, layers, shape, n_classes)
    for name, study in studies.items():
        for g, grid in enumerate(study.get("grids", [])):
            if grid["id"] in study["variants"] and grid["id"] not in grid["variants"]:
                yield (["studies", name, "grids", g, "id"],
                       f"grid id {grid['id']!r} is also the name of a variant; grid ids name training jobs")
    for name, study in studies.items():
        if isinstance(study["seeds"], dict):
            from reglab.sequential import Schedule

            try:
                Schedule.from_config(study["seeds"])
            except ValueError as exc:
                yield ["studies", name, "seeds"], str(exc)
    seen = {}
    for i, claim in enumerate(config["claims"]):
        if claim["id"] in seen:
            yield ["claims", i, "id"], f"duplicate claim id {claim['id']!r} (also claims[{seen[claim['id']]}])"
        seen.setdefault(claim["id"], i)
        tests = [(["claims", i, "parts", j], part) for j, part in enumerate(claim["parts"])] \
            if "parts" in claim else [(["claims", i], claim)]
        for path, test in tests:
            given = [key for key in ("direction", "equivalence", "interval") if key in test]
            if len(given) > 1:
                yield ([*path, given[1]], f"give one of direction, equivalence and interval, not {' and '.join(given)}")
            elif not given:
                yield path, ("a claim needs direction (greater or less), equivalence (a margin > 0) or "
                             "interval ([low, high])")
            if "interval" in test and not test["interval"][0] < test["interval"][1]:
                yield [*path, "interval"], f"interval {test['interval']} must be [low, high] with low < high"
        if claim["study"] not in studies:
            yield ["claims", i, "study"], f"unknown study {claim['study']!r} (defined: {', '.join(studies)})"
            continue
        variants = studies[claim["study"]]["variants"]
        for path, test in tests:
            for key in ("variant", "compare_to"):
                if key in test and test[key] not in variants:
                    yield ([*path, key], f"unknown variant {test[key]!r} in study {claim['study']!r} "
                           f"(defined: {', '.join(variants)})")


def _dataset_errors(name: str, dataset: dict):
    """Yield (key path, message) for a dataset that cannot be made.

    reglab's own generators are checked from their params; any other generator's data are made,
    and a file is read (once: reglab.data caches them), so that a bad parameter, labels that are not
    classes or a bad file stop the config here, naming the key (and the file and its column).
    """
    where = ["datasets", name]
    if dataset.get("generator") in BUILTIN_GENERATORS:
        n_samples = dataset["params"]["n_samples"]
        if dataset["n_train"] >= n_samples:
            yield ([*where, "n_train"], f"n_train ({dataset['n_train']}) must be less than params.n_samples "
                   f"({n_samples}) so that the test set is not empty")
        return
    from reglab.data import DataError, dataset_info  # scikit-learn: only for datasets that need it

    try:
        dataset_info(dataset)
    except DataError as exc:
        yield [*where, *exc.key], str(exc)


def report_text(config: dict) -> dict[str, str]:
    """The report's ``title`` and ``intro``: config's ``report`` keys, else the schema's defaults."""
    defaults = _schema()["properties"]["report"]["properties"]
    given = config.get("report") or {}
    return {key: given.get(key, defaults[key]["default"]) for key in ("title", "intro")}


def _shape_errors(path: list, layers: list[dict], shape: tuple[int, ...], n_classes: int):
    """Yield (key path, message) where a layer cannot take its input or the head cannot classify."""
    for i, layer in enumerate(layers):
        (kind, params), = layer.items()
        try:
            shape = output_shape(kind, params, shape)
        except ShapeError as exc:
            yield [*path, i], str(exc)
            return
    message = head_error(layers, shape, n_classes)
    if message:
        yield [*path, len(layers) - 1], message


def seed_schedule(config: dict, study: str):
    """A sequentially seeded study's :class:`reglab.sequential.Schedule`; None for a fixed number of seeds."""
    seeds = config["studies"][study]["seeds"]
    if not isinstance(seeds, dict):
        return None
    from reglab.sequential import Schedule

    return Schedule.from_config(seeds)


def seeds_for(config: dict, study: str) -> list[int]:
    """The seeds of a study in a validated config: 0..n-1 (a sequential study: up to its max)."""
    schedule = seed_schedule(config, study)
    return list(range(schedule.max if schedule else config["studies"][study]["seeds"]))


def variant_spec(config: dict, study: str, variant: str) -> dict:
    """Everything one training job needs to build and train a variant (and nothing else, so it hashes well)."""
    entry = config["studies"][study]
    training = copy.deepcopy(entry["training"])
    for key, value in entry.get("variant_training", {}).get(variant, {}).items():
        training[key] = {**training[key], **value} if key == "gradient_noise" else value
    spec = {
        "study": study,
        "variant": variant,
        "dataset": {"name": entry["dataset"], **config["datasets"][entry["dataset"]]},
        "training": training,
        "layers": entry["variants"][variant],
    }
    run = entry.get("variance_runs", {}).get(variant)
    if run is not None:  # a variance decomposition run: the other sources keep the study's first seed
        spec["vary"] = {"source": run["source"], "fixed_seed": seeds_for(config, study)[0]}
    return copy.deepcopy(spec)


def spec_hash(spec: dict) -> str:
    """First 16 hex digits of the sha256 of the spec as canonical JSON."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _chunks(config: dict, study: str) -> list[list[int]]:
    """A study's seeds split into consecutive chunks of `seeds_per_job` (one chunk when it is null); a
    sequential study's into its looks (chunk k: the seeds look k adds)."""
    schedule = seed_schedule(config, study)
    if schedule:
        bounds = (0, *schedule.looks)
        return [list(range(a, b)) for a, b in zip(bounds, bounds[1:])]
    seeds = seeds_for(config, study)
    size = config["seeds_per_job"] or len(seeds)
    return [seeds[i:i + size] for i in range(0, len(seeds), size)]


def chunk_seeds(config: dict, study: str, chunk: int) -> list[int]:
    """The seeds that training job `chunk` (counted from 0) of a study trains."""
    chunks = _chunks(config, study)
    if not 0 <= chunk < len(chunks):
        raise ValueError(f"study {study!r} has {len(chunks)} chunk(s) of seeds; there is no chunk {chunk}")
    return chunks[chunk]


#: the pack of a study's other variants (neither grid points nor decomposition runs) with ``pack_variants``
VARIANTS_PACK = "variants--all"


def _all_packs(config: dict, study: str) -> dict[str, list[str]]:
    """Every variant of a study grouped into packs: each grid is a pack named by its id, a variant's
    variance decomposition runs a pack named by :func:`variance_pack`, every other variant a pack of
    its own, named like it, or with ``pack_variants`` (not for a sequentially seeded study) all of
    them one pack, :data:`VARIANTS_PACK` (whether or not another study's job trains them)."""
    entry = config["studies"][study]
    packs, claimed = {}, set()
    for grid in entry.get("grids", []):
        packs[grid["id"]] = [v for v in grid["variants"] if v not in claimed]
        claimed.update(grid["variants"])
    runs = entry.get("variance_runs", {})
    # a sequentially seeded study keeps a job per variant: each look trains only its undecided variants
    together = bool(config.get("pack_variants")) and seed_schedule(config, study) is None
    for variant in entry["variants"]:
        if variant in runs:  # a variant's decomposition runs: one pack (as replicas of one model)
            packs.setdefault(variance_pack(runs[variant]["variant"]), []).append(variant)
        elif variant not in claimed:
            packs.setdefault(VARIANTS_PACK if together else variant, []).append(variant)
    return {name: variants for name, variants in packs.items() if variants}


def content_spec(spec: dict) -> dict:
    """A variant spec without its names (``study``, ``variant``): all that its training computes from.

    Training reads the names only to label its output files, so two variants with equal content
    specs and equal seeds give identical results.
    """
    return {key: value for key, value in spec.items() if key not in ("study", "variant")}


def content_key(config: dict, study: str, variant: str) -> str:
    """The identity of a variant's training: the hash of its content spec and its study's chunks of seeds.

    Variants (of one study or of several) with one content key are trained once and share the run
    directories (see :func:`run_owners`).
    """
    spec = content_spec(variant_spec(config, study, variant))
    return spec_hash({"spec": spec, "chunks": _chunks(config, study)})


def run_owners(config: dict) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(study, variant) -> (study, pack, variant) of the training job whose runs it uses.

    The first listing of a content (:func:`content_key`) in config order (studies in order, a
    study's packs in order, as :func:`training_jobs` lists them) trains it; every later listing of
    the same content shares those runs, under its own study and variant name.
    """
    owners, trained = {}, {}
    for study in config["studies"]:
        for pack, variants in _all_packs(config, study).items():
            for variant in variants:
                key = content_key(config, study, variant)
                owners[(study, variant)] = trained.setdefault(key, (study, pack, variant))
    return owners


def _trained_packs(config: dict, study: str, owners: dict) -> dict[str, list[str]]:
    """The study's packs less the variants another listing trains (see :func:`run_owners`)."""
    packs = {pack: [v for v in variants if owners[(study, v)] == (study, pack, v)]
             for pack, variants in _all_packs(config, study).items()}
    return {pack: variants for pack, variants in packs.items() if variants}


def study_packs(config: dict, study: str) -> dict[str, list[str]]:
    """The variants a study's training jobs train, grouped into packs (trained one after another).

    Each grid is a pack named by its id (its points share the job's start-up cost); every other
    variant is a pack of its own, named like it, or with ``pack_variants`` they are one pack
    (:data:`VARIANTS_PACK`). A variant whose content an earlier listing trains
    (:func:`run_owners`) is left out: it shares that listing's runs. A pack left empty is dropped.
    """
    return _trained_packs(config, study, run_owners(config))


def training_jobs(config: dict) -> list[dict]:
    """One job per (study, pack, chunk of seeds): dicts with keys study, pack, variants, chunk, seeds.

    Each content (:func:`content_key`) is trained by exactly one job per chunk: that of its first
    listing; :func:`study_runs` tells which runs each study reads.
    """
    owners = run_owners(config)
    return [
        {"study": study, "pack": pack, "variants": variants, "chunk": k, "seeds": seeds}
        for study in config["studies"]
        for pack, variants in _trained_packs(config, study, owners).items()
        for k, seeds in enumerate(_chunks(config, study))
    ]


def study_runs(config: dict, results: str = "results") -> list[dict]:
    """Every run directory each study aggregates, with the label it is aggregated under.

    One dict per (study, variant, chunk), in config order (a study's packs, chunks, then the pack's
    variants): ``dir`` the run directory under ``results`` (:func:`reglab.contract.job_dir` of the
    job that trains it: possibly another study's, another pack's and another variant name's),
    ``study`` and ``variant`` the study and variant name it stands for.
    """
    owners = run_owners(config)
    runs = []
    for study in config["studies"]:
        chunks = range(len(_chunks(config, study)))
        for variants in _all_packs(config, study).values():
            for k in chunks:
                for variant in variants:
                    owner_study, owner_pack, owner_variant = owners[(study, variant)]
                    run_dir = f"{job_dir(results, owner_study, owner_pack, k)}/{owner_variant}"
                    runs.append({"dir": run_dir, "study": study, "variant": variant})
    return runs

