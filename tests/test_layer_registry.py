"""The layer registry (reglab.layerkinds): one table that the schema, the shape rules, the model
builder, the resource estimates and config/README.md all come from; and the schema as package data."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from jsonschema import Draft202012Validator

from reglab import configdocs
from reglab.config import LAYER_TYPES, config_schema
from reglab.layerkinds import LAYER_KINDS, LayerKind, network_cost, option_defaults
from reglab.model import build_layer
from reglab.shapes import ShapeError, output_shape

REPO = Path(__file__).resolve().parents[1]
SHIPPED_SCHEMA = REPO / "src" / "reglab" / "schemas" / "config.schema.yaml"

# (kind, params, per-sample input shape): at least one case per kind, covering each rank it takes
CASES = [
    ("dense", {"units": 7}, (5,)),
    ("dense", {"units": 1, "activation": "sigmoid", "use_bias": False}, (3,)),
    ("batch_norm", {}, (6,)),
    ("batch_norm", {"center": False, "scale": False}, (4, 3)),
    ("batch_norm", {}, (3, 5, 4)),
    ("dropout", {"rate": 0.5}, (6,)),
    ("dropout", {"rate": 0.3}, (2, 4, 4)),
    ("gaussian_noise", {"stddev": 0.1}, (6,)),
    ("gaussian_noise", {"stddev": 0.1}, (5, 2)),
    ("activation", {"name": "relu"}, (6,)),
    ("activation", {"name": "tanh"}, (2, 3, 3)),
    ("conv2d", {"filters": 4, "kernel_size": 3}, (2, 8, 7)),
    ("conv2d", {"filters": 3, "kernel_size": 3, "padding": "same", "activation": "relu"}, (1, 8, 8)),
    ("conv2d", {"filters": 2, "kernel_size": 1}, (3, 4, 4)),
    ("max_pooling2d", {}, (3, 8, 8)),
    ("max_pooling2d", {"pool_size": 3}, (2, 7, 5)),
    ("flatten", {}, (3, 4, 5)),
    ("flatten", {}, (6, 2)),
    ("spatial_dropout2d", {"rate": 0.5}, (4, 5, 5)),
    ("lstm", {"units": 5}, (6, 3)),
    ("lstm", {"units": 4, "return_sequences": True, "dropout": 0.2, "recurrent_dropout": 0.2}, (5, 2)),
]
REPLICAS, BATCH = 2, 3


def test_the_registry_the_schema_and_the_config_agree_on_the_layer_types():
    schema = config_schema()
    assert list(schema["$defs"]["layer"]["properties"]) == list(LAYER_KINDS) == list(LAYER_TYPES)
    assert {kind for kind, _, _ in CASES} == set(LAYER_KINDS), "every layer type needs a case in CASES"
    assert yaml.safe_load(SHIPPED_SCHEMA.read_text())["$defs"]["layer"]["properties"] == {}, \
        "layer options belong in reglab/layerkinds.py, not in the YAML"
    Draft202012Validator.check_schema(schema)
    for name, kind in LAYER_KINDS.items():
        assert isinstance(kind, LayerKind) and kind.name == name
        assert schema["$defs"]["layer"]["properties"][name] == kind.options


@pytest.mark.parametrize("name", list(LAYER_KINDS))
def test_each_layer_type_and_option_is_described(name):
    options = LAYER_KINDS[name].options
    assert options.get("description") and options["type"] == "object" and options["additionalProperties"] is False
    for key, sub in options.get("properties", {}).items():
        assert sub.get("description"), f"{name}.{key} has no description"
        if "default" in sub:
            assert Draft202012Validator(sub).is_valid(sub["default"]), f"{name}.{key}: default is not allowed"


@pytest.mark.parametrize("kind,params,shape", CASES, ids=[f"{k}-{s}" for k, _, s in CASES])
def test_the_built_layer_maps_the_rule_input_shape_to_the_rule_output_shape(kind, params, shape):
    """Pins each shape rule to the real layer: the registry's builder, fed a random input of the
    rule's input shape, returns the rule's output shape (training and inference mode)."""
    assert Draft202012Validator(LAYER_KINDS[kind].options).is_valid(params)
    params = {**option_defaults(kind), **params}  # as a validated config has them
    torch.manual_seed(0)
    module, out = build_layer({kind: params}, REPLICAS, shape)
    assert out == output_shape(kind, params, shape) == LAYER_KINDS[kind].output_shape(shape, params)
    assert isinstance(module, torch.nn.Module)
    gens = [torch.Generator().manual_seed(s) for s in range(REPLICAS)]
    if hasattr(module, "reset_parameters"):
        module.reset_parameters(gens)
    if hasattr(module, "generators"):
        module.generators = gens
    x = torch.randn(REPLICAS, BATCH, *shape)
    for training in (True, False):
        module.train(training)
        y = module(x)
        assert tuple(y.shape) == (REPLICAS, BATCH, *out), (kind, training)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", [n for n, k in LAYER_KINDS.items() if k.rank is not None])
def test_a_layer_refuses_inputs_of_the_wrong_rank(name):
    params = next(p for k, p, _ in CASES if k == name)
    for rank in (1, 2, 3):
        if rank != LAYER_KINDS[name].rank:
            with pytest.raises(ShapeError, match=f"{name} needs"):
                output_shape(name, params, (4,) * rank)


def test_a_layer_that_leaves_nothing_is_refused():
    with pytest.raises(ShapeError, match="leaves nothing"):
        output_shape("conv2d", {"filters": 2, "kernel_size": 5}, (1, 4, 4))
    with pytest.raises(ShapeError, match="leaves nothing"):
        output_shape("max_pooling2d", {"pool_size": 3}, (1, 2, 8))


def test_network_costs_of_the_mlps_are_the_former_widest_dense_estimates():
    """For the one-hidden-layer MLPs on 2-D points, 6 x multiply-adds is the former 18 x widest
    dense units, and the largest activation is the widest dense layer (the resource estimates of
    the MLP studies did not change with the registry)."""
    for width in (16, 50, 500):
        layers = [{"dense": {"units": width}}, {"batch_norm": {}}, {"dropout": {"rate": 0.4}},
                  {"dense": {"units": 1, "activation": "sigmoid"}}]
        cost = network_cost(layers, (2,))
        assert 6 * cost.macs == 18 * width and cost.activation_floats == width
        assert (cost.step_seconds, cost.flop_rate) == (0.002, 3e9)


def test_network_costs_of_convolutions_and_lstms():
    cnn = [{"conv2d": {"filters": 8, "kernel_size": 3, "padding": "same"}},
           {"conv2d": {"filters": 8, "kernel_size": 3}}, {"max_pooling2d": {}}, {"flatten": {}}, {"dense": {"units": 10, "activation": "softmax"}}]
    cost = network_cost(cnn, (1, 8, 8))
    assert cost.macs == 8 * 8 * 8 * 9 + 8 * 6 * 6 * 8 * 9 + 72 * 10
    assert cost.activation_floats == 8 * 8 * 8 and (cost.step_seconds, cost.flop_rate) == (0.002, 15e9)
    rnn = [{"lstm": {"units": 32}}, {"dense": {"units": 1, "activation": "sigmoid"}}]
    cost = network_cost(rnn, (20, 1))
    assert cost.macs == 20 * 4 * 32 * (1 + 32) + 32 and cost.activation_floats == 20 * 32
    assert (cost.step_seconds, cost.flop_rate) == (0.004, 15e9)
    # a network runs at the rate of the kind doing most of its multiply-adds: here the dense layers
    wide = [{"lstm": {"units": 2}}, {"dense": {"units": 400}}, {"dense": {"units": 1, "activation": "sigmoid"}}]
    assert network_cost(wide, (3, 1)).flop_rate == 3e9


def test_the_registry_and_the_schema_need_no_torch():
    code = ("import sys; import reglab.layerkinds, reglab.config, reglab.configdocs, reglab.shapes; "
            "reglab.configdocs.render(); assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# --------------------------------------------------------------------------- config/README.md
def test_config_readme_is_what_the_schema_and_the_registry_give():
    """config/README.md is generated (python -m reglab docs); regenerate it after editing the schema
    or the registry."""
    assert (REPO / "config" / "README.md").read_text() == configdocs.render(), "run: python -m reglab docs"


def test_config_readme_documents_every_top_level_key_and_every_layer_type():
    text = configdocs.render()
    for key in config_schema()["properties"]:
        assert f"| `{key}` |" in text, key
    for name, kind in LAYER_KINDS.items():
        assert f"### `{name}`" in text and kind.description in text, name
        for option in kind.options.get("properties", {}):
            assert f"| `{name}.{option}` |" in text, (name, option)


def test_a_key_without_a_description_cannot_be_documented(monkeypatch):
    schema = config_schema()
    del schema["properties"]["threads"]["description"]
    monkeypatch.setattr(configdocs, "config_schema", lambda: schema)
    with pytest.raises(configdocs.DocsError, match="threads"):
        configdocs.render()


def test_the_docs_command_writes_and_checks(tmp_path):
    from reglab.cli import main

    out = tmp_path / "README.md"
    assert main(["docs", "--out", str(out)]) == 0
    assert out.read_text() == configdocs.render()
    assert main(["docs", "--out", str(out), "--check"]) == 0
    out.write_text("stale\n")
    assert main(["docs", "--out", str(out), "--check"]) == 2


# --------------------------------------------------------------------------- the schema as package data
def test_a_plain_install_validates_configs(tmp_path):
    """A non-editable install (no repository around it) finds its schema: the shipped config
    validates, and a bad one stops with a ConfigError naming the key path."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc"))
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-compile", "--target", str(site), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    shutil.rmtree(source)  # nothing may be read from the source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(REPO / "config" / "config.yaml", elsewhere / "my.yaml")
    bad = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    bad["studies"]["dropout"]["variants"]["dropout_0.4"][1]["dropout"]["rate"] = 1.5
    (elsewhere / "bad.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    check = textwrap.dedent(f"""
        import reglab, reglab.config as c
        assert reglab.__file__.startswith({str(site)!r}), reglab.__file__
        config = c.validate_config(c.load_config("my.yaml"), source="my.yaml")
        assert config["studies"]["batchnorm"]["seeds"] == 10
        try:
            c.validate_config(c.load_config("bad.yaml"), source="bad.yaml")
        except c.ConfigError as exc:
            print(exc)
        else:
            raise SystemExit("the bad config was accepted")
    """)
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(site), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", check], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.strip() == ("config error in bad.yaml at studies.dropout.variants.dropout_0.4[1].dropout.rate: "
                                   "1.5 is greater than or equal to the maximum of 1")


def test_the_workflow_schema_is_a_link_to_the_package_schema():
    link = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert link.is_symlink() and not Path(link.readlink()).is_absolute()
    assert link.resolve() == SHIPPED_SCHEMA.resolve()
