"""Config loading, schema validation (defaults and error messages), job expansion and spec hashing."""

import copy
import hashlib
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from reglab.config import (
    SCHEMA_PATH,
    ConfigError,
    chunk_seeds,
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
    "dropout": ["overfit", "dropout_0.4"],
    "noise": ["overfit", "input_0.01", "hidden_pre_0.1", "hidden_post_0.1"],
}


@pytest.fixture
def raw():
    """The shipped config as read from YAML (before validation)."""
    return load_config(CONFIG_PATH)


@pytest.fixture
def config(raw):
    """The shipped config, validated and with defaults filled in."""
    return validate_config(raw, source=str(CONFIG_PATH))


def test_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(yaml.safe_load(SCHEMA_PATH.read_text()))


def test_shipped_config_yields_expected_jobs(config):
    jobs = training_jobs(config)
    assert {s: [j["variant"] for j in jobs if j["study"] == s] for s in EXPECTED_VARIANTS} == EXPECTED_VARIANTS
    assert len(jobs) == 9
    assert all(j["chunk"] == 0 and j["seeds"] == list(range(10)) for j in jobs)
    assert all(seeds_for(config, s) == list(range(10)) for s in EXPECTED_VARIANTS)


def test_shipped_config_claims_reference_real_variants(config):
    ids = [c["id"] for c in config["claims"]]
    assert len(ids) == 8 and len(set(ids)) == 8
    published = yaml.safe_load((CONFIG_PATH.parent / "published.yaml").read_text())
    assert ids == [c["id"] for c in published["claims"]]
    assert [c["text"] for c in config["claims"]] == [c["text"] for c in published["claims"]]
    assert config["published"] == "config/published.yaml"


def test_defaults_are_filled(config, raw):
    dropout, batchnorm = config["studies"]["dropout"], config["studies"]["batchnorm"]
    assert dropout["training"]["optimizer"] == {
        "name": "adam", "lr": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}
    assert batchnorm["training"]["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False}
    assert batchnorm["variants"]["bn_after"][1] == {
        "batch_norm": {"momentum": 0.99, "epsilon": 1e-3, "center": True, "scale": True}}
    assert dropout["variants"]["overfit"][0]["dense"] == {
        "units": 500, "activation": "relu", "kernel_initializer": "glorot_uniform", "use_bias": True}
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
    config = validate_config(raw)
    jobs = [j for j in training_jobs(config) if (j["study"], j["variant"]) == ("dropout", "overfit")]
    assert [j["chunk"] for j in jobs] == list(range(len(expected)))
    assert [j["seeds"] for j in jobs] == expected
    assert [chunk_seeds(config, "dropout", k) for k in range(len(expected))] == expected
    assert len(training_jobs(config)) == 9 * len(expected)
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


OVERFIT = ["studies", "dropout", "variants", "overfit"]
BAD_CONFIGS = {
    # name: (edit, text the message must contain (the key path), more text it must contain)
    "unknown layer": (_set(OVERFIT + [0], {"foo": {"units": 3}}), "studies.dropout.variants.overfit[0]:",
                      "unknown layer 'foo' (allowed: dense, batch_norm, dropout, gaussian_noise, activation)"),
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
    "claim with unknown variant": (_set(["claims", 3, "variant"], "dropout_0.9"), "claims[3].variant:",
                                   "unknown variant 'dropout_0.9' in study 'dropout'"),
    "claim compared to unknown variant": (_set(["claims", 4, "compare_to"], "nope"), "claims[4].compare_to:",
                                          "unknown variant 'nope'"),
    "claim with unknown study": (_set(["claims", 0, "study"], "bn"), "claims[0].study:", "unknown study 'bn'"),
    "claim with unknown metric": (_set(["claims", 0, "metric"], "accuracy"), "claims[0].metric:", "is not one of"),
    "duplicate claim ids": (_duplicate_claim, "claims[8].id:", "duplicate claim id 'bn_faster' (also claims[0])"),
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
