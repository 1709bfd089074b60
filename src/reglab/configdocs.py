"""config/README.md, generated from the config schema and the layer registry: every config key with
its type, default, allowed values and description. ``python -m reglab docs`` writes it.

Every key of the schema must have a ``description`` (DocsError otherwise), so a key cannot be
added without being documented; tests/test_layer_registry.py checks the committed file is current.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from reglab.config import config_schema
from reglab.layerkinds import LAYER_KINDS
from reglab.shapes import RANK_NAMES

TITLE = "# Config reference"
#: the placeholder for an entry of a mapping of names, by the mapping's key
PLACEHOLDERS = {"datasets": "dataset", "studies": "study", "variants": "variant", "variant_training": "variant"}
#: $defs documented once in a section of their own (where they are used, a row points there)
SHARED = {"optimizer": "Optimizer", "training_override": "Per-variant training", "layers": "Layers",
          "layer": "Layers"}


class DocsError(ValueError):
    """The schema cannot be documented (a key without a description)."""


@dataclass
class Row:
    key: str
    type: str
    default: str
    allowed: str
    description: str


@dataclass
class Section:
    title: str
    intro: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    used_at: list[str] = field(default_factory=list)
    shared: bool = False  # a shared $def's section: its keys are relative to where it is used


def anchor(title: str) -> str:
    """GitHub's anchor of a heading."""
    return "#" + re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


class _Walker:
    def __init__(self, schema: dict) -> None:
        self.root = schema
        self.defs = schema["$defs"]
        self.shared: dict[str, Section] = {}

    def ref_name(self, schema: dict) -> str | None:
        ref = schema.get("$ref")
        return ref.removeprefix("#/$defs/") if ref else None

    def resolve(self, schema: dict) -> dict:
        """``schema`` with a local ``$ref`` followed (keys beside the ``$ref`` win)."""
        name = self.ref_name(schema)
        if name is None:
            return schema
        target = self.resolve(self.defs[name])
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}

    # ------------------------------------------------------------------ cells
    def type_of(self, schema: dict) -> str:
        name = self.ref_name(schema)
        if name in ("layers", "layer"):
            return "list of layers" if name == "layers" else "layer"
        if name in SHARED:
            return "mapping"
        if name == "name":
            return "name"
        schema = self.resolve(schema)
        if "oneOf" in schema and "type" not in schema:
            return " or ".join(dict.fromkeys(self.type_of(branch) for branch in schema["oneOf"]))
        kind = schema.get("type")
        if kind is None and "enum" in schema:
            kind = sorted({_json_type(v) for v in schema["enum"]})
        if kind is None and "const" in schema:
            kind = _json_type(schema["const"])
        if isinstance(kind, list):
            return " or ".join(kind)
        if kind == "array" and "items" in schema:
            return f"list of {_plural(self.entry_type(schema['items']))}"
        if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            return f"mapping of names to {_plural(self.entry_type(schema['additionalProperties']))}"
        if kind == "object":
            return "mapping"
        return kind or "any"

    def entry_type(self, schema: dict) -> str:
        """What a list or mapping holds: a $def's name (a `dataset`), else its type."""
        name = self.ref_name(schema)
        if name and name not in ("name", "layer", "layers"):
            return name.replace("_", " ")
        return self.type_of(schema)

    def allowed(self, schema: dict) -> str:
        schema = self.resolve(schema)
        parts = []
        if "enum" in schema:
            parts.append(", ".join(_code(v) for v in schema["enum"]))
        if "const" in schema:
            parts.append(_code(schema["const"]))
        low = (">=", schema["minimum"]) if "minimum" in schema else (">", schema.get("exclusiveMinimum"))
        high = ("<=", schema["maximum"]) if "maximum" in schema else ("<", schema.get("exclusiveMaximum"))
        if low[1] is not None and high[1] is not None:
            parts.append(f"{low[1]} {low[0].replace('>', '<')} x {high[0]} {high[1]}")
        elif low[1] is not None:
            parts.append(f"x {low[0]} {low[1]}")
        elif high[1] is not None:
            parts.append(f"x {high[0]} {high[1]}")
        if "pattern" in schema:
            parts.append(f"matches `{schema['pattern']}`")
        if schema.get("minItems") == 1 or schema.get("minProperties") == 1:
            parts.append("not empty")
        return "; ".join(parts)

    def row(self, key: str, schema: dict, required: bool, qualifier: str = "") -> Row:
        description = schema.get("description")
        if not description and self.ref_name(schema) != "name":  # a name's own text says nothing of its use
            description = self.resolve(schema).get("description")
        if not description:
            raise DocsError(f"the config schema has no description for {key}")
        resolved = self.resolve(schema)
        if "default" in schema or "default" in resolved:
            default = _code(schema.get("default", resolved.get("default")))
        else:
            default = "required" if required else ""
        name = self.ref_name(schema)
        text = " ".join(description.split())
        if name in SHARED:
            title = SHARED[name]
            text += f" (see [{title}]({anchor(title)}))"
        return Row(f"`{key}`" + (f" ({qualifier})" if qualifier else ""), self.type_of(schema), default,
                   self.allowed(schema), text)

    # ------------------------------------------------------------------ walk
    def walk(self, key: str, schema: dict, required: bool, section: Section, qualifier: str = "") -> None:
        """A row for ``key``, then rows for what lies inside it (shared $defs: once, in their section)."""
        section.rows.append(self.row(key, schema, required, qualifier))
        name = self.ref_name(schema)
        if name in SHARED:
            self.use(name, key, section)
            return
        self.children(key, self.resolve(schema), section)

    def use(self, name: str, key: str, section: Section) -> None:
        """Note that shared $def ``name`` is used at ``key`` of ``section``."""
        where = f"`{key}`" + (f" of [{section.title}]({anchor(section.title)})" if section.shared else "")
        self.shared_section(name).used_at.append(where)

    def children(self, key: str, schema: dict, section: Section, qualifier: str = "") -> None:
        prefix = f"{key}." if key else ""
        required = set(schema.get("required", []))
        for branch in schema.get("oneOf", []):
            if self.ref_name(branch) in SHARED:  # e.g. a variant written as a list of layers
                self.use(self.ref_name(branch), key, section)
        branches = [self.resolve(b) for b in schema.get("oneOf", [])]
        objects = [b for b in branches if "properties" in b]
        tag = _discriminator(objects)
        for child, sub in schema.get("properties", {}).items():
            if child != tag:
                self.walk(prefix + child, sub, child in required, section, qualifier)
        if tag:  # oneOf objects told apart by a constant (the optimizer's name)
            consts = [b["properties"][tag]["const"] for b in objects]
            first = objects[0]["properties"][tag]
            section.rows.append(Row(f"`{prefix}{tag}`", self.type_of(first), "required",
                                    ", ".join(map(_code, consts)), _describe(first, prefix + tag)))
        for branch in objects:
            label = f"{tag}: {branch['properties'][tag]['const']}" if tag else branch.get("title", qualifier)
            for child, sub in branch["properties"].items():
                if child != tag:
                    self.walk(prefix + child, sub, child in branch.get("required", []), section, label)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            placeholder = f"{prefix}<{PLACEHOLDERS.get(key.rsplit('.', 1)[-1], 'name')}>"
            self.walk(placeholder, extra, False, section)
        items = schema.get("items")
        if isinstance(items, dict) and self.resolve(items).get("type") == "object":
            self.walk(f"{key}[i]", items, False, section)
        for part in schema.get("allOf", []):
            condition = part.get("if", {}).get("properties", {})
            label = ", ".join(f"{k}: {v['const']}" for k, v in condition.items() if "const" in v)
            for child, sub in part.get("then", {}).get("properties", {}).items():
                self.children(prefix + child, self.resolve(sub), section, label)

    def shared_section(self, name: str) -> Section:
        title = SHARED[name]
        if title not in self.shared:
            self.shared[title] = Section(title, shared=True)
            if title != "Layers":
                schema = self.resolve(self.defs[name])
                self.shared[title].intro.append(_describe(schema, name))
                self.children("", schema, self.shared[title])
        return self.shared[title]


def _discriminator(objects: list[dict]) -> str | None:
    """The key with a different constant in every branch of a oneOf of objects, if any."""
    if len(objects) < 2:
        return None
    for key in objects[0]["properties"]:
        if all("const" in b["properties"].get(key, {}) for b in objects):
            return key
    return None


def _describe(schema: dict, key: str) -> str:
    if not schema.get("description"):
        raise DocsError(f"the config schema has no description for {key}")
    return " ".join(schema["description"].split())


def _json_type(value) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}.get(type(value), "any")


def _plural(kind: str) -> str:
    if kind.startswith(("list", "mapping")) or " or " in kind:
        return kind
    return kind[:-1] + "ies" if kind.endswith("y") else kind + "s"


def _code(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`"


def _table(rows: list[Row]) -> list[str]:
    lines = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [r.key, r.type, r.default, r.allowed, r.description]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def layer_sections(schema: dict) -> list[str]:
    """One subsection per layer kind, from the registry (its options as the schema has them)."""
    walker = _Walker(schema)
    lines = []
    for name, kind in LAYER_KINDS.items():
        options = schema["$defs"]["layer"]["properties"][name]
        needs = f"needs {RANK_NAMES[kind.rank]}" if kind.rank else "takes any input"
        lines += ["", f"### `{name}`", "", f"{_describe(options, name)}. It {needs}.", ""]
        section = Section(name)
        walker.children(name, options, section)
        lines += _table(section.rows) if section.rows else [f"No options: write `{name}: {{}}`."]
    return lines


def render() -> str:
    """The text of config/README.md."""
    schema = config_schema()
    walker = _Walker(schema)
    top = Section("Top-level keys")
    walker.children("", schema, top)
    walker.shared_section("layer")
    lines = [
        TITLE,
        "",
        "<!-- Generated by `python -m reglab docs` from src/reglab/schemas/config.schema.yaml and the",
        "     layer registry src/reglab/layerkinds.py: edit those, then rerun it. -->",
        "",
        "Every key a config file (`config/config.yaml`, or one given with `--configfile`) may hold.",
        "`<study>`, `<dataset>`, `<variant>` stand for names you choose (letters, digits, `_`, `.`, `-`;",
        "they name files and Snakemake wildcards); `[i]` for a list's entries. A default is filled in",
        "when the key is left out; a key with neither a default nor `required` is optional. The config",
        "is checked against these rules before anything runs, and a mistake stops with one message",
        "naming the key path.",
        "",
        "## Top-level keys",
        "",
        *_table(top.rows),
    ]
    for title, section in walker.shared.items():
        if title == "Layers":
            continue
        where = ", ".join(dict.fromkeys(section.used_at))
        lines += ["", f"## {title}", "", *section.intro, "", f"Used at {where}.", "", *_table(section.rows)]
    layer = schema["$defs"]["layer"]
    where = ", ".join(dict.fromkeys(walker.shared["Layers"].used_at))
    lines += [
        "",
        "## Layers",
        "",
        f"A variant is a list of layers (at {where}). Each layer is {_describe(layer, 'layer')}, e.g.",
        "`- dense: {units: 50, activation: relu}`. The layer types: "
        + ", ".join(f"[`{name}`]({anchor(name)})" for name in LAYER_KINDS) + ".",
        *layer_sections(schema),
    ]
    return "\n".join(lines) + "\n"
