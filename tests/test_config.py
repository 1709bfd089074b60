"""Config loading, schema validation (defaults and error messages), job expansion and spec hashing."""

import copy
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from reglab.config import (
    VARIANTS_PACK,
    ConfigError,
    chunk_seeds,
    config_schema,
    load_config,
    seeds_for,
    spec_hash,
    training_jobs,
    validate_config,
    variant_spec,
)

CONFIG_PATH = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
EXPECTED_VARIANTS = {
    "batchnorm": ["baseline", "bn_after", "bn_before"],
    "dropout": ["overfit", "dropout_0.4"]  # and its variance decomposition runs (variance_sources)
    + [f"{v}--{source}" for v in ("overfit", "dropout_0.4") for source in ("init", "order", "draws", "split", "all")],
    "noise": ["overfit", "input_0.01", "hidden_pre_0.1", "hidden_post_0.1"],
    "batchnorm_ext": ["baseline", "bn_after", "bn_no_affine", "bn_no_momentum", "bn_input"],
    "dropout_ext": ["overfit", "dropout_0.4", "input_dropout_0.2", "dropout_0.4_maxnorm_3"]
    + [f"dropout_{r / 10}" for r in range(10) if r != 4]
    + [f"dropout_{r}_maxnorm_{m}" for r in (0.2, 0.4, 0.6) for m in (1, 2, 3, 4) if (r, m) != (0.4, 3)],
    "noise_ext": ["overfit", "input_0.01", "hidden_pre_0.1", "input_and_hidden", "weight_noise_0.05",
                  "gradient_noise_0.01", "label_flip_0.1"]
    + [f"input_{v}" for v in (0.0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)]
    + [f"hidden_pre_{v}" for v in (0.0, 0.005, 0.01, 0.02, 0.05, 0.2, 0.5, 1.0)]
    + [f"noise2d_input{a}_hidden{b}" for a in (0.0, 0.01, 0.05, 0.1) for b in (0.0, 0.01, 0.05, 0.1)],
    "cnn": ["baseline", "bn", "dropout_0.5", "spatial_dropout_0.5", "input_noise_0.1"],
    "rnn": ["baseline", "dropout_after_0.5", "input_dropout_0.5", "variational_0.5", "bn_after"],
}
N_VARIANTS = sum(map(len, EXPECTED_VARIANTS.values()))
#: training jobs group a grid's points into one pack named by the grid's id; other variants are packs of their own
EXPECTED_PACKS = {
    **{s: [[v] for v in EXPECTED_VARIANTS[s]] for s in ("batchnorm", "noise", "batchnorm_ext", "cnn", "rnn")},
    "dropout": [["overfit"], ["dropout_0.4"], EXPECTED_VARIANTS["dropout"][2:7], EXPECTED_VARIANTS["dropout"][7:]],
    "dropout_ext": [[f"dropout_{r / 10}" for r in range(10)],
                    [f"dropout_{r}_maxnorm_{m}" for r in (0.2, 0.4, 0.6) for m in (1, 2, 3, 4)],
                    ["overfit"], ["input_dropout_0.2"]],
    "noise_ext": [[f"input_{v}" for v in (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)],
                  [f"hidden_pre_{v}" for v in (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)],
                  [f"noise2d_input{a}_hidden{b}" for a in (0.0, 0.01, 0.05, 0.1) for b in (0.0, 0.01, 0.05, 0.1)],
                  ["overfit"], ["input_and_hidden"], ["weight_noise_0.05"], ["gradient_noise_0.01"], ["label_flip_0.1"]],
}
N_PACKS = sum(map(len, EXPECTED_PACKS.values()))
#: with pack_variants (as the shipped config has it), a study's variants that are neither grid points
#: nor decomposition runs are one pack, where the first of them is listed
EXPECTED_PACKS_TOGETHER = {
    **{s: [EXPECTED_VARIANTS[s]] for s in ("batchnorm", "noise", "batchnorm_ext", "cnn", "rnn")},
    "dropout": [["overfit", "dropout_0.4"], *EXPECTED_PACKS["dropout"][2:]],
    "dropout_ext": [*EXPECTED_PACKS["dropout_ext"][:2], ["overfit", "input_dropout_0.2"]],
    "noise_ext": [*EXPECTED_PACKS["noise_ext"][:3], [v for [v] in EXPECTED_PACKS["noise_ext"][3:]]],
}
#: variants identical to an earlier listing (same spec but for the names, same seeds) -> the listing that trains them
SHARED = {
    ("noise", "overfit"): ("dropout", "overfit"),
    ("batchnorm_ext", "baseline"): ("batchnorm", "baseline"),
    ("batchnorm_ext", "bn_after"): ("batchnorm", "bn_after"),
    ("dropout_ext", "overfit"): ("dropout", "overfit"),
    ("dropout_ext", "dropout_0.4"): ("dropout", "dropout_0.4"),  # also the grid's point 0.4
    ("noise_ext", "overfit"): ("dropout", "overfit"),
    ("noise_ext", "input_0.01"): ("noise", "input_0.01"),  # also the input grid's point 0.01
    ("noise_ext", "hidden_pre_0.1"): ("noise", "hidden_pre_0.1"),  # also the hidden grid's point 0.1
    ("noise_ext", "input_and_hidden"): ("noise_ext", "noise2d_input0.01_hidden0.1"),  # that 2-D grid point
}


def expected_jobs(packs: dict) -> dict:
    """The training jobs: the packs less the shared variants (a pack left empty is no job)."""
    return {s: [kept for pack in study_packs if (kept := [v for v in pack if (s, v) not in SHARED])]
            for s, study_packs in packs.items()}


EXPECTED_JOBS = expected_jobs(EXPECTED_PACKS)
N_JOBS = sum(map(len, EXPECTED_JOBS.values()))
EXPECTED_JOBS_TOGETHER = expected_jobs(EXPECTED_PACKS_TOGETHER)


@pytest.fixture
def raw():
    """The shipped config as read from YAML (before validation)."""
    return load_config(CONFIG_PATH)


@pytest.fixture
def config(raw):
    """The shipped config, validated and with defaults filled in."""
    return validate_config(raw, source=str(CONFIG_PATH))


def test_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(config_schema())


def test_shipped_config_yields_expected_jobs(config):
    jobs = training_jobs(config)
    assert config["pack_variants"] is True
    assert {s: [j["variants"] for j in jobs if j["study"] == s] for s in EXPECTED_PACKS} == EXPECTED_JOBS_TOGETHER
    assert [j["pack"] for j in jobs if j["study"] == "noise_ext"] == ["input_noise", "hidden_noise", "noise2d",
                                                                      VARIANTS_PACK]
    assert len(jobs) == sum(map(len, EXPECTED_JOBS_TOGETHER.values())) == 15
    apart = validate_config({**config, "pack_variants": False})
    assert sorted((j["study"], v) for j in training_jobs(apart) for v in j["variants"]) == sorted(
        (j["study"], v) for j in jobs for v in j["variants"])
    jobs = training_jobs(apart)  # a job per variant: the per-variant expectations below
    assert {s: [j["variants"] for j in jobs if j["study"] == s] for s in EXPECTED_PACKS} == EXPECTED_JOBS
    assert [j["pack"] for j in jobs if j["study"] == "noise_ext"][:3] == ["input_noise", "hidden_noise", "noise2d"]
    trained = {s: sorted(v for j in jobs if j["study"] == s for v in j["variants"]) for s in EXPECTED_VARIANTS}
    assert trained == {s: sorted(v for v in vs if (s, v) not in SHARED)  # every variant once, or shared
                       for s, vs in EXPECTED_VARIANTS.items()}
    assert {s: list(config["studies"][s]["variants"]) for s in EXPECTED_VARIANTS} == EXPECTED_VARIANTS
    assert len(jobs) == N_JOBS == 32 and N_PACKS == 38 and N_VARIANTS == 97 and len(SHARED) == 9
    assert all(j["chunk"] == 0 and j["seeds"] == list(range(10)) for j in jobs)
    assert all(seeds_for(config, s) == list(range(10)) for s in EXPECTED_VARIANTS)


def test_shipped_config_claims_reference_real_variants(config):
    ids = [c["id"] for c in config["claims"]]
    assert len(ids) == 12 and len(set(ids)) == 12
    published = yaml.safe_load((CONFIG_PATH.parent / "published.yaml").read_text())
    assert ids[:8] == [c["id"] for c in published["claims"]]  # then the CNN/RNN claims (issue 6)
    assert [c["text"] for c in config["claims"]][:8] == [c["text"] for c in published["claims"]]
    assert config["published"] == "config/published.yaml"


def test_defaults_are_filled(config, raw):
    dropout, batchnorm = config["studies"]["dropout"], config["studies"]["batchnorm"]
    assert dropout["training"]["optimizer"] == {
        "name": "adam", "lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    assert batchnorm["training"]["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False}
    assert batchnorm["variants"]["bn_after"][1] == {
        "batch_norm": {"momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True}}
    assert dropout["variants"]["overfit"][0]["dense"] == {
        "units": 500, "activation": "relu", "kernel_initializer": "glorot_uniform", "use_bias": True,
        "max_norm": None, "unit_norm": False, "weight_noise": 0}
    assert config["claims"][0]["alpha"] == 0.05 and config["claims"][0]["threshold"] == 0

    del raw["studies"]["dropout"]["training"]["batch_size"]
    del raw["seeds"], raw["threads"], raw["seeds_per_job"], raw["accelerator"]
    raw["studies"]["noise"]["seeds"] = 3
    filled = validate_config(raw)
    assert filled["studies"]["dropout"]["training"]["batch_size"] == 32
    assert (filled["seeds"], filled["threads"], filled["seeds_per_job"], filled["accelerator"]) == (10, 1, None, "cpu")
    assert seeds_for(filled, "noise") == [0, 1, 2] and seeds_for(filled, "dropout") == list(range(10))


def test_validate_returns_a_new_dict_and_is_idempotent(raw):
    before = copy.deepcopy(raw)
    validated = validate_config(raw)
    assert raw == before and validated != raw
    assert validate_config(validated) == validated


@pytest.mark.parametrize(
    ("seeds_per_job", "expected"),
    [(None, [list(range(10))]), (4, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]), (5, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]),
     (1, [[s] for s in range(10)]), (10, [list(range(10))]), (25, [list(range(10))])],
)
def test_seeds_per_job_chunks(raw, seeds_per_job, expected):
    raw["seeds_per_job"] = seeds_per_job
    raw["pack_variants"] = False
    config = validate_config(raw)
    jobs = [j for j in training_jobs(config) if (j["study"], j["pack"]) == ("dropout", "overfit")]
    assert all(j["variants"] == ["overfit"] for j in jobs)
    assert [j["chunk"] for j in jobs] == list(range(len(expected)))
    assert [j["seeds"] for j in jobs] == expected
    assert [chunk_seeds(config, "dropout", k) for k in range(len(expected))] == expected
    assert len(training_jobs(config)) == N_JOBS * len(expected)
    with pytest.raises(ValueError):
        chunk_seeds(config, "dropout", len(expected))


def test_spec_holds_what_a_job_needs(config):
    spec = variant_spec(config, "dropout", "dropout_0.4")
    assert set(spec) == {"study", "variant", "dataset", "training", "layers"}
    assert spec["dataset"] == {"name": "circles_100", "generator": "make_circles",
                               "params": {"n_samples": 100, "noise": 0.1, "random_state": 1}, "n_train": 30}
    assert spec["layers"][1] == {"dropout": {"rate": 0.4}}
    spec["layers"][1]["dropout"]["rate"] = 0.5
    assert config["studies"]["dropout"]["variants"]["dropout_0.4"][1]["dropout"]["rate"] == 0.4


def test_spec_hash_is_stable_and_tracks_changes(raw, config):
    hashes = {(s, v): spec_hash(variant_spec(config, s, v)) for s, vs in EXPECTED_VARIANTS.items() for v in vs}
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in hashes.values())
    assert len(set(hashes.values())) == len(hashes)
    spec = variant_spec(config, "noise", "input_0.01")
    reordered = dict(reversed(list(spec.items())))
    assert spec_hash(reordered) == hashes["noise", "input_0.01"]
    assert spec_hash(variant_spec(validate_config(copy.deepcopy(raw)), "noise", "input_0.01")) == spec_hash(spec)

    raw["studies"]["noise"]["variants"]["input_0.01"][0]["gaussian_noise"]["stddev"] = 0.02
    changed = validate_config(raw)
    new = {(s, v): spec_hash(variant_spec(changed, s, v)) for s, v in hashes}
    assert new["noise", "input_0.01"] != hashes["noise", "input_0.01"]
    assert {k: h for k, h in new.items() if k != ("noise", "input_0.01")} == {
        k: h for k, h in hashes.items() if k != ("noise", "input_0.01")}


def test_spec_hash_is_sha256_of_canonical_json():
    expected = hashlib.sha256(b'{"a":[1,2.5],"b":{"c":null,"d":true}}').hexdigest()[:16]
    assert spec_hash({"b": {"d": True, "c": None}, "a": [1, 2.5]}) == expected


def test_spec_hash_ignores_seeds(raw, config):
    raw["seeds"] = 3
    assert spec_hash(variant_spec(validate_config(raw), "dropout", "overfit")) == spec_hash(
        variant_spec(config, "dropout", "overfit"))


# --------------------------------------------------------------------------- grids and training overrides
def _layer_options(layer: dict) -> dict:
    """The options of a one-key layer mapping."""
    (options,) = layer.values()
    return options


def test_grids_expand_into_named_variants_in_order(config, raw):
    dropout = config["studies"]["dropout_ext"]
    grid = dropout["grids"][0]
    assert grid["variants"] == [f"dropout_{r / 10}" for r in range(10)]
    assert grid["variants"][4] == "dropout_0.4" and grid["baseline"] == "overfit"
    # dropout_0.4 is both an explicit variant and a grid point: one variant, where it was written
    assert list(dropout["variants"]).count("dropout_0.4") == 1 and list(dropout["variants"]).index("dropout_0.4") == 1
    assert dropout["variants"]["dropout_0.4"] == config["studies"]["dropout"]["variants"]["dropout_0.4"]
    assert dropout["variants"]["dropout_0.0"][1] == {"dropout": {"rate": 0.0}}
    noise = config["studies"]["noise_ext"]
    assert [g["id"] for g in noise["grids"]] == ["input_noise", "hidden_noise", "noise2d"]
    stddevs = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    assert noise["grids"][0]["variants"] == [f"input_{v}" for v in stddevs]
    assert noise["grids"][1]["variants"] == [f"hidden_pre_{v}" for v in stddevs]
    assert list(noise["variants"])[:7] == list(raw["studies"]["noise_ext"]["variants"])  # explicit ones first
    for study in ("batchnorm", "dropout", "noise", "batchnorm_ext"):
        assert config["studies"][study]["grids"] == []


@pytest.mark.parametrize(("study", "index"), [("dropout_ext", 0), ("noise_ext", 0), ("noise_ext", 1)])
def test_each_grid_point_spec_has_its_value_in_place(config, study, index):
    grid = config["studies"][study]["grids"][index]
    base = variant_spec(config, study, grid["base"])
    assert len(grid["variants"]) == len(grid["values"])
    for name, value in zip(grid["variants"], grid["values"]):
        spec = variant_spec(config, study, name)
        assert spec["variant"] == name and spec["training"] == base["training"]
        assert _layer_options(spec["layers"][grid["layer"]])[grid["param"]] == value
        others = [(i, layer) for i, layer in enumerate(spec["layers"]) if i != grid["layer"]]
        assert others == [(i, layer) for i, layer in enumerate(base["layers"]) if i != grid["layer"]]
        assert next(iter(spec["layers"][grid["layer"]])) == next(iter(base["layers"][grid["layer"]]))
    assert len({spec_hash(variant_spec(config, study, v)) for v in grid["variants"]}) == len(grid["values"])


def test_training_param_grid_sets_the_variant_training(raw):
    raw["studies"]["noise_ext"]["grids"] += [
        {"id": "flip", "base": "overfit", "param": "label_flip", "values": [0.05, 0.2]},
        {"id": "gn", "base": "label_flip_0.1", "param": "gradient_noise.eta", "values": [0.001, 0.1],
         "name": "gn_{value}_flip"},
    ]
    config = validate_config(raw)
    noise = config["studies"]["noise_ext"]
    assert noise["grids"][3]["variants"] == ["flip_0.05", "flip_0.2"]  # default name: {id}_{value}
    assert noise["grids"][4]["variants"] == ["gn_0.001_flip", "gn_0.1_flip"]
    overfit = variant_spec(config, "noise_ext", "overfit")
    for name, value in (("flip_0.05", 0.05), ("flip_0.2", 0.2)):
        spec = variant_spec(config, "noise_ext", name)
        assert spec["training"] == {**overfit["training"], "label_flip": value}
        assert spec["layers"] == overfit["layers"]
        assert noise["variant_training"][name] == {"label_flip": value}
    # a dotted training param, on a base with its own override: both kept, the nested key merged
    spec = variant_spec(config, "noise_ext", "gn_0.1_flip")
    assert spec["training"]["label_flip"] == 0.1
    assert spec["training"]["gradient_noise"] == {"eta": 0.1, "gamma": 0.55}
    assert overfit["training"]["label_flip"] == 0 and overfit["training"]["gradient_noise"] == {"eta": 0, "gamma": 0.55}


def test_variant_training_overrides_are_merged_into_that_variant_only(raw):
    raw["studies"]["noise_ext"]["training"]["gradient_noise"] = {"gamma": 0.7}
    raw["studies"]["noise_ext"]["variants"]["gradient_noise_0.01"]["training"] = {"gradient_noise": {"eta": 0.01}}
    config = validate_config(raw)
    noise = config["studies"]["noise_ext"]
    assert noise["variant_training"] == {"gradient_noise_0.01": {"gradient_noise": {"eta": 0.01}},
                                         "label_flip_0.1": {"label_flip": 0.1}}
    assert all(isinstance(layers, list) for layers in noise["variants"].values())  # {layers, training} normalised
    study_training = noise["training"]
    assert study_training["gradient_noise"] == {"eta": 0, "gamma": 0.7} and study_training["label_flip"] == 0
    gn = variant_spec(config, "noise_ext", "gradient_noise_0.01")
    assert gn["training"]["gradient_noise"] == {"eta": 0.01, "gamma": 0.7}  # merged key by key
    assert gn["training"]["label_flip"] == 0
    assert gn["layers"] == noise["variants"]["overfit"]
    flip = variant_spec(config, "noise_ext", "label_flip_0.1")
    assert flip["training"] == {**study_training, "label_flip": 0.1}
    for name in noise["variants"]:
        if name not in ("gradient_noise_0.01", "label_flip_0.1"):
            assert variant_spec(config, "noise_ext", name)["training"] == study_training, name
    same_layers = {spec_hash(variant_spec(config, "noise_ext", v)) for v in ("overfit", "gradient_noise_0.01",
                                                                             "label_flip_0.1")}
    assert len(same_layers) == 3  # the override is part of what a job's hash covers
    for study, entry in config["studies"].items():
        if study != "noise_ext":
            assert entry["variant_training"] == {}


def test_validate_is_idempotent_on_the_shipped_config(raw):
    once = validate_config(raw)
    twice = validate_config(once)
    assert twice == once
    assert validate_config(json.loads(json.dumps(once))) == once  # the workflow passes it on as JSON
    for study in ("dropout_ext", "noise_ext"):
        assert [g["variants"] for g in twice["studies"][study]["grids"]] == [
            g["variants"] for g in once["studies"][study]["grids"]]
    assert twice["studies"]["noise_ext"]["variant_training"] == once["studies"]["noise_ext"]["variant_training"]
    assert {(s, v): spec_hash(variant_spec(twice, s, v)) for s in EXPECTED_VARIANTS for v in EXPECTED_VARIANTS[s]} == {
        (s, v): spec_hash(variant_spec(once, s, v)) for s in EXPECTED_VARIANTS for v in EXPECTED_VARIANTS[s]}


def _set(path, value):
    """A config edit that sets the value at a key path (a list of keys and indices)."""
    def edit(config):
        target = config
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _rename_variant(new):
    def edit(config):
        variants = config["studies"]["dropout"]["variants"]
        variants[new] = variants.pop("overfit")
    return edit


def _duplicate_claim(config):
    config["claims"].append(dict(config["claims"][0], text="again"))


def _grid(study, grid):
    """A config edit that appends a grid to a study."""
    def edit(config):
        config["studies"][study].setdefault("grids", []).append(grid)
    return edit


OVERFIT = ["studies", "dropout", "variants", "overfit"]
DROPOUT_GRID = ["studies", "dropout_ext", "grids", 0]
LABEL_FLIP = ["studies", "noise_ext", "variants", "label_flip_0.1"]
GRAD_NOISE = ["studies", "noise_ext", "variants", "gradient_noise_0.01"]
MAXNORM = ["studies", "dropout_ext", "variants", "dropout_0.4_maxnorm_3"]
BAD_CONFIGS = {
    # name: (edit, text the message must contain (the key path), more text it must contain)
    "unknown layer": (_set(OVERFIT + [0], {"foo": {"units": 3}}), "studies.dropout.variants.overfit[0]:",
                      "unknown layer 'foo' (allowed: dense, batch_norm, dropout, gaussian_noise, activation, conv2d, max_pooling2d, flatten, spatial_dropout2d, lstm)"),
    "two keys in a layer": (_set(OVERFIT + [0], {"dense": {"units": 3}, "dropout": {"rate": 0.1}}),
                            "studies.dropout.variants.overfit[0]:", "exactly one key"),
    "unknown key in a layer": (_set(OVERFIT + [0, "dense", "size"], 3), "studies.dropout.variants.overfit[0].dense:",
                               "unknown key 'size'"),
    "negative epochs": (_set(["studies", "dropout", "training", "epochs"], -5), "studies.dropout.training.epochs:",
                        "-5 is less than the minimum of 1"),
    "zero epochs": (_set(["studies", "dropout", "training", "epochs"], 0), "studies.dropout.training.epochs:",
                    "0 is less than the minimum of 1"),
    "epochs not a number": (_set(["studies", "dropout", "training", "epochs"], "ten"),
                            "studies.dropout.training.epochs:", "'ten' is not of type 'integer'"),
    "dropout rate 1.0": (_set(["studies", "dropout", "variants", "dropout_0.4", 1, "dropout", "rate"], 1.0),
                         "studies.dropout.variants.dropout_0.4[1].dropout.rate:", "1.0 is greater than or equal to"),
    "dropout rate -0.1": (_set(["studies", "dropout", "variants", "dropout_0.4", 1, "dropout", "rate"], -0.1),
                          "studies.dropout.variants.dropout_0.4[1].dropout.rate:", "less than the minimum of 0"),
    "unknown optimizer": (_set(["studies", "dropout", "training", "optimizer"], {"name": "rmsprop"}),
                          "studies.dropout.training.optimizer:", "unknown optimizer 'rmsprop' (allowed: adam, sgd)"),
    "sgd option on adam": (_set(["studies", "dropout", "training", "optimizer", "momentum"], 0.9),
                           "studies.dropout.training.optimizer:", "unknown key 'momentum'"),
    "unknown dataset": (_set(["studies", "dropout", "dataset"], "moons_5"), "studies.dropout.dataset:",
                        "unknown dataset 'moons_5'"),
    "n_train not below n_samples": (_set(["datasets", "circles_100", "n_train"], 100), "datasets.circles_100.n_train:",
                                    "must be less than params.n_samples"),
    "moons with a circles param": (_set(["datasets", "circles_100"], {
        "generator": "make_moons", "params": {"n_samples": 100, "noise": 0.1, "random_state": 1, "factor": 0.5},
        "n_train": 30}), "datasets.circles_100.params:", "unknown key 'factor'"),
    "variant name ../evil": (_rename_variant("../evil"), "studies.dropout.variants:", "invalid name '../evil'"),
    "variant name with a space": (_rename_variant("a b"), "studies.dropout.variants:", "invalid name 'a b'"),
    "variant name <script>": (_rename_variant("<script>"), "studies.dropout.variants:", "invalid name '<script>'"),
    "seeds 0": (_set(["seeds"], 0), "at seeds:", "0 is less than the minimum of 1"),
    "study seeds 0": (_set(["studies", "noise", "seeds"], 0), "studies.noise.seeds:", "less than the minimum"),
    "seeds_per_job 0": (_set(["seeds_per_job"], 0), "at seeds_per_job:", "0 is less than the minimum of 1"),
    "unknown top-level key": (_set(["epochs"], 10), "config error", "unknown key 'epochs' (allowed: seeds,"),
    "accelerator tpu": (_set(["accelerator"], "tpu"), "at accelerator:", "'tpu' is not one of"),
    "exponent read as text": (_set(["studies", "dropout", "training", "optimizer", "epsilon"], "1e-7"),
                              "studies.dropout.training.optimizer.epsilon:", "write e.g. 1.0e-7"),
    "last layer not sigmoid": (_set(OVERFIT + [1, "dense", "activation"], "relu"),
                               "studies.dropout.variants.overfit[1]:",
                               "last layer must be dense with units: 1 and activation: sigmoid"),
    "last layer not dense": (lambda config: config["studies"]["dropout"]["variants"]["overfit"].append(
        {"activation": {"name": "sigmoid"}}),
                             "studies.dropout.variants.overfit[2]:", "last layer must be dense"),
    "empty variant": (_set(OVERFIT, []), "studies.dropout.variants.overfit:", "must not be empty"),
    "conv2d on vectors": (_set(OVERFIT + [0], {"conv2d": {"filters": 4, "kernel_size": 3}}),
                          "studies.dropout.variants.overfit[0]:", "conv2d needs feature maps"),
    "lstm on images": (_set(["studies", "cnn", "variants", "baseline", 0], {"lstm": {"units": 4}}),
                       "studies.cnn.variants.baseline[0]:", "lstm needs sequences"),
    "pooling to nothing": (_set(["studies", "cnn", "variants", "baseline", 2, "max_pooling2d", "pool_size"], 7),
                           "studies.cnn.variants.baseline[2]:", "leaves nothing"),
    "softmax units not the classes": (_set(["studies", "cnn", "variants", "baseline", 4, "dense", "units"], 3),
                                      "studies.cnn.variants.baseline[4]:", "units: 10 and activation: softmax"),
    "dense on feature maps without flatten": (
        lambda config: config["studies"]["cnn"]["variants"]["baseline"].pop(3),
        "studies.cnn.variants.baseline[3]:", "dense needs vectors"),
    "lstm dropout 1": (_set(["studies", "rnn", "variants", "variational_0.5", 0, "lstm", "recurrent_dropout"], 1.0),
                       "studies.rnn.variants.variational_0.5[0].lstm.recurrent_dropout:", "greater than or equal"),
    "too many digits": (_set(["datasets", "digits_1000", "params", "n_samples"], 5000),
                        "datasets.digits_1000.params.n_samples:", "greater than the maximum of 1797"),
    "claim with unknown variant": (_set(["claims", 3, "variant"], "dropout_0.9"), "claims[3].variant:",
                                   "unknown variant 'dropout_0.9' in study 'dropout'"),
    "claim compared to unknown variant": (_set(["claims", 2, "compare_to"], "nope"), "claims[2].compare_to:",
                                          "unknown variant 'nope'"),
    "claim part compared to unknown variant": (_set(["claims", 4, "parts", 1, "compare_to"], "nope"),
                                               "claims[4].parts[1].compare_to:", "unknown variant 'nope'"),
    "claim with unknown study": (_set(["claims", 0, "study"], "bn"), "claims[0].study:", "unknown study 'bn'"),
    "claim with unknown metric": (_set(["claims", 2, "metric"], "accuracy"), "claims[2].metric:", "is not one of"),
    "claim part with unknown metric": (_set(["claims", 0, "parts", 0, "metric"], "accuracy"),
                                       "claims[0].parts[0].metric:", "is not one of"),
    "duplicate claim ids": (_duplicate_claim, "claims[12].id:", "duplicate claim id 'bn_faster' (also claims[0])"),
    # ---- grids, per-variant training overrides and the new layer options (the *_ext studies)
    "grid param the layer lacks": (
        _set(DROPOUT_GRID + ["layer"], 0), "studies.dropout_ext.grids[0].param:",
        "layer 0 (dense) of variant 'dropout_0.4' has no parameter 'rate' (has: units, activation, "
        "kernel_initializer, use_bias, max_norm, unit_norm, weight_noise)"),
    "grid param training lacks": (
        _grid("noise_ext", {"id": "mom", "base": "overfit", "param": "momentum", "values": [0.5]}),
        "studies.noise_ext.grids[3].param:", "training has no parameter 'momentum' (has: optimizer, epochs,"),
    "grid layer out of range": (_set(DROPOUT_GRID + ["layer"], 3), "studies.dropout_ext.grids[0].layer:",
                                "base variant 'dropout_0.4' has 3 layers; there is no layer 3"),
    "grid layer negative": (_set(DROPOUT_GRID + ["layer"], -1), "studies.dropout_ext.grids[0].layer:",
                            "-1 is less than the minimum of 0"),
    "grid base unknown": (_set(DROPOUT_GRID + ["base"], "dropout_0.5x"), "studies.dropout_ext.grids[0].base:",
                          "unknown base variant 'dropout_0.5x' (defined: overfit, dropout_0.4,"),
    "grid baseline unknown": (_set(DROPOUT_GRID + ["baseline"], "nope"), "studies.dropout_ext.grids[0].baseline:",
                              "unknown baseline variant 'nope' (defined: overfit,"),
    "grid values empty": (_set(DROPOUT_GRID + ["values"], []), "studies.dropout_ext.grids[0].values:",
                          "must not be empty"),
    "grid noise stddev < 0": (
        _set(["studies", "noise_ext", "grids", 1, "values", 3], -0.02), "studies.noise_ext.grids[1].values[3]:",
        "grid value -0.02 gives an invalid variant 'hidden_pre_-0.02': -0.02 is less than the minimum of 0 "
        "(at [1].gaussian_noise.stddev)"),
    "label flip override > 1": (_set(LABEL_FLIP + ["training", "label_flip"], 1.5),
                                "studies.noise_ext.variants.label_flip_0.1.training.label_flip:",
                                "1.5 is greater than the maximum of 1"),
    "label flip override < 0": (_set(LABEL_FLIP + ["training", "label_flip"], -0.1),
                                "studies.noise_ext.variants.label_flip_0.1.training.label_flip:",
                                "-0.1 is less than the minimum of 0"),
    "label flip in study training > 1": (_set(["studies", "noise_ext", "training", "label_flip"], 2),
                                         "studies.noise_ext.training.label_flip:", "2 is greater than the maximum of 1"),
    "label flip grid value > 1": (
        _grid("noise_ext", {"id": "flip", "base": "overfit", "param": "label_flip", "values": [0.1, 1.2]}),
        "studies.noise_ext.grids[3].values[1]:",
        "grid value 1.2 gives an invalid variant 'flip_1.2': 1.2 is greater than the maximum of 1 "
        "(at training.label_flip)"),
    "label flip grid value < 0": (
        _grid("noise_ext", {"id": "flip", "base": "overfit", "param": "label_flip", "values": [-0.5]}),
        "studies.noise_ext.grids[3].values[0]:", "-0.5 is less than the minimum of 0"),
    "max_norm 0": (_set(MAXNORM + [0, "dense", "max_norm"], 0),
                   "studies.dropout_ext.variants.dropout_0.4_maxnorm_3[0].dense.max_norm:",
                   "0 is less than or equal to the minimum of 0"),
    "max_norm -1": (_set(MAXNORM + [0, "dense", "max_norm"], -1),
                    "studies.dropout_ext.variants.dropout_0.4_maxnorm_3[0].dense.max_norm:",
                    "-1 is less than or equal to the minimum of 0"),
    "max_norm 0 as a grid value": (
        _grid("dropout_ext", {"id": "mn", "base": "dropout_0.4_maxnorm_3", "layer": 0, "param": "max_norm",
                              "values": [1.0, 0.0]}),
        "studies.dropout_ext.grids[2].values[1]:", "0.0 is less than or equal to the minimum of 0"),
    "weight_noise < 0": (_set(["studies", "noise_ext", "variants", "weight_noise_0.05", 0, "dense", "weight_noise"], -0.05),
                         "studies.noise_ext.variants.weight_noise_0.05[0].dense.weight_noise:",
                         "-0.05 is less than the minimum of 0"),
    "gradient noise eta < 0 (override)": (
        _set(GRAD_NOISE + ["training", "gradient_noise", "eta"], -0.01),
        "studies.noise_ext.variants.gradient_noise_0.01.training.gradient_noise.eta:",
        "-0.01 is less than the minimum of 0"),
    "gradient noise eta < 0 (study)": (
        _set(["studies", "noise_ext", "training", "gradient_noise"], {"eta": -1}),
        "studies.noise_ext.training.gradient_noise.eta:", "-1 is less than the minimum of 0"),
    "gradient noise unknown key": (
        _set(GRAD_NOISE + ["training", "gradient_noise", "sigma"], 0.1),
        "studies.noise_ext.variants.gradient_noise_0.01.training.gradient_noise:", "unknown key 'sigma'"),
    "grid name without {value}": (_set(DROPOUT_GRID + ["name"], "dropout_x"), "studies.dropout_ext.grids[0].name:",
                                  "'dropout_x' does not match"),
    "grid point clashes with a variant": (
        _set(DROPOUT_GRID + ["name"], "input_dropout_{value}"), "studies.dropout_ext.grids[0].values[2]:",
        "grid point 'input_dropout_0.2' clashes with a different variant of that name"),
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_bad_config_names_the_key_path(raw, name):
    edit, path, detail = BAD_CONFIGS[name]
    edit(raw)
    with pytest.raises(ConfigError) as info:
        validate_config(raw, source="my.yaml")
    message = str(info.value)
    assert message.startswith("config error in my.yaml")
    assert path in message and detail in message
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize("source", [{}, {"source": "config"}])
def test_message_without_a_file_name(raw, source):
    raw["studies"]["dropout"]["variants"]["dropout_0.4"][1]["dropout"]["rate"] = 1.5
    with pytest.raises(ConfigError) as info:
        validate_config(raw, **source)
    assert str(info.value) == (
        "config error at studies.dropout.variants.dropout_0.4[1].dropout.rate: "
        "1.5 is greater than or equal to the maximum of 1")
    assert info.value.path == ("studies", "dropout", "variants", "dropout_0.4", 1, "dropout", "rate")


@pytest.mark.parametrize(
    ("text", "detail"),
    [(None, "file not found"),
     ("seeds: [1, 2\n", "invalid YAML at line 2"),
     ("seeds: 1\n  bad: indent\n", "invalid YAML at line 2"),
     ("- a\n- b\n", "top level must be a mapping of keys, got a list"),
     ("", "got an empty file")],
)
def test_load_errors_name_the_file(tmp_path, text, detail):
    path = tmp_path / "my config.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"config error in {path}: ")
    assert detail in str(info.value)
